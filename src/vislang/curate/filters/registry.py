"""The filters by name, and how a ``{name: options}`` mapping becomes validated filters.

A new filter is its :class:`~vislang.curate.filters.base.FilterConfig` subclass and one line
in :data:`FILTERS`; the CLI's ``--filters FILE.yaml`` and :func:`~vislang.curate.filters.filter_pool`
find it here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from vislang.config.base import format_error, read_yaml
from vislang.curate.filters.base import FilterConfig
from vislang.curate.filters.datacomp import BasicFilter, ClipScoreFilter, ImageFilter, TextFilter
from vislang.errors import ConfigError

FILTERS: dict[str, type[FilterConfig]] = {
    "basic": BasicFilter,
    "clip_score": ClipScoreFilter,
    "text": TextFilter,
    "image": ImageFilter,
}

FilterSpec = FilterConfig | Mapping[str, Any] | None


def build_filters(filters: Mapping[str, FilterSpec]) -> dict[str, FilterConfig]:
    """Validated filters in registry order (so ``filter.json`` lists them the same way however
    the mapping was written). Options may be a config, a mapping of its fields, or None for the
    defaults; a problem is a one-line :class:`ConfigError` naming the filter and the field."""
    if not isinstance(filters, Mapping):
        raise ConfigError(f"filters must be a mapping of filter name to options, got {type(filters).__name__}")
    if not filters:
        raise ConfigError(f"choose at least one filter ({', '.join(FILTERS)})")
    order = [name for name in FILTERS if name in filters] + [name for name in filters if name not in FILTERS]
    return {name: build_filter(name, filters[name]) for name in order}


def build_filter(name: str, options: FilterSpec) -> FilterConfig:
    """One filter from its registry name and options."""
    registered = FILTERS.get(name)
    if isinstance(options, FilterConfig):
        if registered is not None and not isinstance(options, registered):
            raise ConfigError(f"filter {name}: expected a {registered.__name__}, got a {type(options).__name__}")
        return options
    if registered is None:
        raise ConfigError(f"unknown filter {name!r}; choose from {', '.join(FILTERS)}")
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"filter {name}: options must be a mapping of fields, got {options!r}")
    try:
        return registered.model_validate(dict(options))
    except ValidationError as error:
        raise ConfigError(filter_error(error, name)) from None


def filter_error(error: ValidationError, name: str) -> str:
    """The first problem as one line: ``filter NAME: FIELD: problem`` (a rule between fields,
    which has no single field, names the fields in its message)."""
    first = error.errors()[0]
    if not first["loc"]:
        return f"filter {name}: {first['msg'].removeprefix('Value error, ')}"
    return format_error(error, f"filter {name}")


def read_filters(path: str | Path) -> dict[str, Any]:
    """A YAML file's ``{name: options}`` mapping (``{basic: {}, clip_score: {fraction: 0.3}}``),
    read with the config reader that refuses duplicate keys and names a syntax error's line and
    column; the options are validated by :func:`build_filters`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"filters file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read filters file {path}: {type(error).__name__}") from None
    raw = read_yaml(text, str(path))
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of filter name to options, got {type(raw).__name__}")
    return raw
