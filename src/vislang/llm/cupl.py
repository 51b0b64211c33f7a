"""CuPL (Pratt et al. 2023): class descriptions written by a language model, for zero-shot prompts.

Instead of filling one hand-written template per class ("a photo of a {}."), CuPL asks a language
model several questions about what each class looks like and uses its answers as that class's
prompts. The questions are CuPL's for ImageNet; ``n`` answers are asked per question. The file
written is the per-class JSON that CLIP_benchmark and vislang's zero-shot task read
(``descriptions:`` with ``prompts: descriptions|both``).

Cleaning: an answer is cut to its first line with text (models often add a list or a second
paragraph), stripped of list markers and quotes, its whitespace joined, and ended with a full
stop. Empty answers and case-insensitive repeats are dropped. An answer that does not mention the
class name (as a whole word, any case, a plural "s"/"es" allowed) (CuPL's caption question often gets "a photo of ..." answers without it) gets
``"{class name}: "`` put in front, so every prompt still names its class for the text encoder.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from vislang.data.prompts import classname_set, read_classnames
from vislang.errors import ConfigError, DataError, first_line
from vislang.llm.base import Backend, LLMError, Request, article

# CuPL's ImageNet questions; "{article} {c}" is "a goldfish" or "an axolotl".
CUPL_QUESTIONS: tuple[str, ...] = (
    "Describe what {article} {c} looks like",
    "How can you identify {article} {c}?",
    "What does {article} {c} look like?",
    "Describe an image from the internet of {article} {c}",
    "A caption of an image of {article} {c}:",
)
_MARKER = re.compile(r"^\s*(?:[-*\u2022]+|\d+[.)]|\(\d+\))\s*")


def read_classes(spec: str) -> list[str]:
    """Class names from a file (one a line, or a ``.json`` list) or, when no such file exists, the
    shipped class-name set of that name; something that looks like a path but is missing is named
    as a missing file rather than as an unknown set."""
    path = Path(spec)
    if path.is_file():
        return read_classnames(path)
    if path.suffix or "/" in spec or os.sep in spec:
        raise DataError(f"class-names file not found: {spec}")
    try:
        return classname_set(spec)
    except ConfigError as error:
        raise ConfigError(f"{spec} is neither a class-names file nor a shipped set: {error}") from None


def cupl_requests(classname: str) -> list[Request]:
    """CuPL's questions about one class, as ``describe`` requests."""
    return [Request("describe", q.format(article=article(classname), c=classname)) for q in CUPL_QUESTIONS]


def clean_description(text: str, classname: str) -> str:
    """One answer as one prompt line (see the module docstring); empty when nothing is left."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    line = " ".join(_MARKER.sub("", lines[0]).split()).strip("\"'\u201c\u201d ")
    if not line:
        return ""
    if line[-1] not in ".!?":
        line += "."
    if not re.search(r"(?<!\w)" + re.escape(classname) + r"(?:e?s)?(?!\w)", line, re.IGNORECASE):
        line = f"{classname}: {line}"
    return line


def clean_descriptions(texts: list[str], classname: str) -> list[str]:
    """The cleaned answers for one class, empties and repeats (ignoring case) dropped, in order."""
    out, seen = [], set()
    for text in texts:
        line = clean_description(text, classname)
        if line and line.lower() not in seen:
            seen.add(line.lower())
            out.append(line)
    return out


def describe_classes(backend: Backend, classnames: list[str], n: int, temperature: float) -> dict[str, list[str]]:
    """``{class name: [descriptions]}`` from ``n`` answers to each CuPL question per class, in the
    classes' order. A class left with no usable description is an error naming it: the
    evaluation would otherwise have no prompt for it."""
    out: dict[str, list[str]] = {}
    for name in classnames:
        answers = backend.generate(cupl_requests(name), n, temperature)
        descriptions = clean_descriptions([text for texts in answers for text in texts], name)
        if not descriptions:
            raise LLMError(f"the {backend.name} backend gave no usable description of class {name!r}")
        out[name] = descriptions
    return out


def write_json_atomic(data: object, path: str | Path) -> None:
    """Write ``data`` as JSON through a temporary file renamed over ``path``: a reader sees the
    old file or the whole new one, never half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot write {path}: {first_line(error)}") from None
