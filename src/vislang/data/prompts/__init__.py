"""Zero-shot prompts shipped as data: named template sets and class-name lists, and the readers
for a user's own templates, class names and per-class descriptions.

The sets are the strings CLIP_benchmark evaluates with (its English templates and class names),
kept as JSON beside this module so a published number can be reproduced with the same words;
``openai_imagenet`` names OpenAI's 80 ImageNet templates. A template holds ``{c}`` (or ``{}``)
where the class name goes.
"""

from __future__ import annotations

import difflib
import functools
import json
from pathlib import Path
from typing import Any

from vislang.errors import ConfigError, DataError
from vislang.files import read_json, read_text

HERE = Path(__file__).parent


@functools.cache
def _shipped(file: str) -> tuple[dict[str, list[str]], dict[str, str]]:
    """(sets, aliases) of one shipped JSON file, read once per process."""
    data = read_json(HERE / file, "shipped prompt file")
    return data["sets"], data.get("aliases", {})


def _pick(file: str, name: str, what: str) -> list[str]:
    sets, aliases = _shipped(file)
    key = aliases.get(name, name)
    if key in sets:
        return list(sets[key])
    names = sorted({*sets, *aliases})
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f"close names: {', '.join(close)}" if close else f"known: {', '.join(names)}"
    raise ConfigError(f"unknown {what} set {name!r} ({hint})")


def template_set(name: str) -> list[str]:
    """The shipped template set ``name`` (a CLIP_benchmark dataset name, or ``openai_imagenet``)."""
    return _pick("templates.json", name, "template")


def template_sets() -> list[str]:
    """Every shipped template set's name (aliases included), sorted."""
    sets, aliases = _shipped("templates.json")
    return sorted({*sets, *aliases})


def classname_set(name: str) -> list[str]:
    """The shipped class-name list ``name``, in label order."""
    return _pick("classnames.json", name, "class-name")


def classname_sets() -> list[str]:
    """Every shipped class-name list's name, sorted."""
    sets, aliases = _shipped("classnames.json")
    return sorted({*sets, *aliases})


def _lines(path: Path, what: str) -> list[tuple[int, str]]:
    """(line number, stripped text) of a one-item-per-line file; blank lines only at the end.

    A blank line in the middle would shift every later label by one, so it is refused."""
    lines = [line.strip() for line in read_text(path, what).splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise DataError(f"{path}: the {what} is empty")
    for number, line in enumerate(lines, 1):
        if not line:
            raise DataError(f"{path}: line {number} is blank (one item per line, no gaps)")
    return list(enumerate(lines, 1))


def _string_list(value: Any, path: Path, what: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise DataError(f"{path}: the {what} must be a non-empty JSON list of non-empty strings")
    return [v.strip() for v in value]


def check_template(template: str, where: str, error: type[Exception] = DataError) -> str:
    """``template`` if it has a place for the class name; otherwise every class would get the
    same prompt, which silently makes the classifier a coin toss."""
    if "{c}" not in template and "{}" not in template:
        raise error(f"{where}: template {template!r} has no {{c}} for the class name")
    try:
        template.format("x", c="x")
    except (IndexError, KeyError, ValueError) as problem:
        raise error(f"{where}: template {template!r} does not format ({problem})") from None
    return template


def read_templates(path: str | Path) -> list[str]:
    """Templates from a file: ``.json`` (a list of strings) or text (one per line)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        items = list(enumerate(_string_list(read_json(path, "templates file"), path, "templates file"), 1))
        where = "item"
    else:
        items, where = _lines(path, "templates file"), "line"
    return [check_template(text, f"{path} {where} {number}") for number, text in items]


def read_classnames(path: str | Path) -> list[str]:
    """Class names from a file, in label order: text (one per line) or ``.json`` (a list)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        names = _string_list(read_json(path, "class-names file"), path, "class-names file")
    else:
        names = [text for _, text in _lines(path, "class-names file")]
    seen: set[str] = set()
    for number, name in enumerate(names, 1):
        if name in seen:
            raise DataError(f"{path}: class name {name!r} (item {number}) is given twice")
        seen.add(name)
    return names


def read_descriptions(path: str | Path) -> dict[str, list[str]]:
    """Per-class descriptions (CuPL's and CLIP_benchmark's JSON: ``{class: [description, ...]}``)."""
    path = Path(path)
    data = read_json(path, "descriptions file")
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path}: descriptions must be a JSON object {{class name: [descriptions]}}")
    out: dict[str, list[str]] = {}
    for name, texts in data.items():
        if isinstance(texts, dict):
            raise DataError(
                f"{path}: key {name!r} holds an object, not a list: the file looks nested by dataset "
                f"(keys {', '.join(list(data)[:3])}); give a file of one {{class name: [descriptions]}}"
            )
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise DataError(f"{path}: class {name!r} must map to a non-empty list of non-empty strings")
        out[name] = list(texts)
    return out


def write_descriptions(descriptions: dict[str, list[str]], path: str | Path) -> None:
    """Write per-class descriptions in the JSON layout :func:`read_descriptions` reads (generated
    descriptions are kept as a file, so an evaluation can be rerun with the same words)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(descriptions, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
