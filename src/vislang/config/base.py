"""What every config section shares: strict pydantic sections, the YAML reader and ``--set``.

A section forbids unknown keys, so a typo fails before any work starts. YAML is read with a
loader that refuses duplicate keys (a second ``train:`` would otherwise replace the first
silently) and names the line and column of a syntax error. A file may start from another one
with ``base: other.yaml`` (relative to the file, chainable); its own keys override the base's.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from vislang.errors import ConfigError, first_line
from vislang.files import read_text


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


S = TypeVar("S", bound=Section)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {mark.line + 1}, column {mark.column + 1})", mark
            )
        seen[key] = key_node
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def read_yaml(text: str, source: str) -> Any:
    """Parse YAML text; a syntax error or a duplicate key becomes one line with its position."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = error.problem or first_line(error)
        if "duplicate key" in problem:  # the problem text carries its own position
            where = ""
        raise ConfigError(f"{source}: {where}{problem}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML ({type(error).__name__})") from None


def read_config_file(path: str | Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file as a mapping, with its ``base:`` chain merged under it."""
    path = Path(path)
    if path.resolve() in chain:
        raise ConfigError(f"{path}: base: chain loops back to itself")
    raw = read_yaml(read_text(path, "config file", ConfigError), str(path)) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping of sections, got {type(raw).__name__}")
    if isinstance(raw.get("objective"), str):  # objective: clip is short for objective: {kind: clip}
        raw["objective"] = {"kind": raw["objective"]}
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: must be a path to another config file, got {base!r}")
    below = read_config_file(path.parent / base, (*chain, path.resolve()))
    kind = raw.get("objective", {}).get("kind")
    if kind is not None and kind != below.get("objective", {}).get("kind"):
        below.pop("objective", None)  # another objective: none of the base's objective fields apply
    return deep_merge(below, raw)


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``: mappings merge key by key, anything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``tree[a][b][c] = value`` for ``key == "a.b.c"``, creating sections as needed; a number
    picks an item of a list that is already there (``tasks.0.n``)."""
    *parents, leaf = key.split(".")
    node: Any = tree
    for i, part in enumerate(parents):
        if isinstance(node, list):
            node = _item(node, part, key, parents[:i])
            continue
        child = node.setdefault(part, {})
        if isinstance(child, str) and i == 0 and part == "objective":  # objective: clip -> {kind: clip}
            child = node[part] = {"kind": child}
        if not isinstance(child, (dict, list)):
            raise ConfigError(f"--set {key}: {'.'.join(parents[: i + 1])} is not a section")
        node = child
    if isinstance(node, list):
        index = _index(node, leaf, key, parents)
        node[index] = value
    elif isinstance(node, dict):
        node[leaf] = value
    else:
        raise ConfigError(f"--set {key}: {'.'.join(parents)} is not a section")


def _index(items: list, part: str, key: str, where: list[str]) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise ConfigError(f"--set {key}: {'.'.join(where)} has items 0..{len(items) - 1}, not {part!r}")
    return int(part)


def _item(items: list, part: str, key: str, where: list[str]) -> Any:
    item = items[_index(items, part, key, where)]
    if not isinstance(item, (dict, list)):
        raise ConfigError(f"--set {key}: {'.'.join([*where, part])} is not a section")
    return item


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.lr=1e-3"`` -> ``("train.lr", 0.001)``; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {text!r}")
    try:
        value = read_yaml(raw, f"--set {key.strip()}") if raw.strip() else ""
    except ConfigError:
        value = raw
    return key.strip(), value


_BOUNDS = {
    "greater_than_equal": ("at least", "ge"),
    "greater_than": ("greater than", "gt"),
    "less_than_equal": ("at most", "le"),
    "less_than": ("less than", "lt"),
    "too_short": ("a list of at least", "min_length"),
}


def _union_tag(part: Any) -> bool:
    """Whether a location part is pydantic's name for a member of a union type (``str``,
    ``list[str]``, ``literal['world']``, ``function-after[...]``) rather than a config key."""
    return isinstance(part, str) and (part in ("str", "int", "float", "bool", "none") or "[" in part)


def format_error(error: ValidationError, source: str, moved: dict[str, str] | None = None) -> str:
    """The first validation problem as one line naming the dotted key."""
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"] if not _union_tag(part)) or "<root>"
    if first["type"] == "extra_forbidden":
        if moved and key in moved:
            return f"{source}: '{key}' has moved: {moved[key]}"
        return f"{source}: unknown config key '{key}'"
    message = first["msg"].removeprefix("Value error, ")
    bound = _BOUNDS.get(first["type"])
    if bound is not None:
        message = f"must be {bound[0]} {first['ctx'][bound[1]]}"
        if first["type"] == "too_short":
            message += " item" if first["ctx"]["min_length"] == 1 else " items"
    elif first["type"] == "finite_number":
        message = "must be a finite number"
    elif first["type"] == "string_pattern_mismatch":
        message = f"must match {first['ctx']['pattern']}"
    elif first["type"] == "missing" and len(first["loc"]) > 1 and isinstance(first["loc"][-1], int):
        key, message = key.rpartition(".")[0], f"too few items (item {first['loc'][-1]} is missing)"
    if first["type"] == "value_error" or "input" not in first:
        return f"{source}: {key}: {message}"
    return f"{source}: {key}: {message} (got {first['input']!r})"


def pick_registered(registry: dict[str, type[Section]], key: str, what: str, value: Any) -> Any:
    """Validate a raw mapping as the registry entry its ``key`` field names (objective kinds, task
    types, dataset formats): the plug-in lookup every registry shares."""
    if isinstance(value, Section) or not isinstance(value, dict):
        return value
    name = value.get(key)
    if not isinstance(name, str) or name not in registry:
        raise ValueError(f"unknown {what} {name!r}; choose from {', '.join(sorted(registry))}")
    return registry[name].model_validate(value)


def build_section(cls: type[S], raw: dict[str, Any], overrides: list[str], source: str) -> S:
    """A section validated from a raw mapping plus ``key=value`` overrides; errors are one line
    naming ``source`` and the key."""
    raw = copy.deepcopy(raw)
    for text in overrides:
        set_dotted(raw, *parse_override(text))
    try:
        return cls.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(format_error(error, source)) from None
