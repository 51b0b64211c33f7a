"""SugarCrepe (Hsieh et al. 2023) in its published form: one JSON file per negative type.

The release's ``data/`` folder holds seven files, ``<type>.json`` for the types in
:data:`TYPES`. Each maps a string id (ids need not be contiguous) to
``{"filename": ..., "caption": ..., "negative_caption": ...}``: ``filename`` is a COCO val2017
image (e.g. ``000000397133.jpg``) relative to the image root, ``caption`` the true COCO caption
and ``negative_caption`` its hard negative. The reader keeps the file's id order, so ``n``
takes the same first items on every run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vislang.errors import ConfigError, DataError
from vislang.files import read_json

# the release's order: REPLACE (object, attribute, relation), SWAP (object, attribute), ADD (object, attribute)
TYPES = ("replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att", "add_obj", "add_att")
KEYS = ("filename", "caption", "negative_caption")


@dataclass(frozen=True)
class SugarCrepeItem:
    """One SugarCrepe item: an image, its true caption and the hard negative."""

    id: str
    image: Path
    positive: str
    negative: str


def _item(path: Path, key: str, record: object, images: Path) -> SugarCrepeItem:
    if not isinstance(record, dict):
        raise DataError(f"{path}: item {key!r} is a {type(record).__name__}, not an object with {', '.join(KEYS)}")
    for name in KEYS:
        if name not in record:
            raise DataError(f"{path}: item {key!r} has no key {name!r}")
        if not isinstance(record[name], str) or not record[name].strip():
            raise DataError(f"{path}: item {key!r}: {name!r} must be a non-empty string")
    return SugarCrepeItem(key, images / record["filename"], record["caption"], record["negative_caption"])


def read_type(path: str | Path, images: str | Path, n: int | None = None) -> list[SugarCrepeItem]:
    """The items of one ``<type>.json`` file (the first ``n`` in file order when ``n`` is given)."""
    path, images = Path(path), Path(images)
    data = read_json(path, "SugarCrepe file")
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object mapping ids to items, got a {type(data).__name__}")
    if not data:
        raise DataError(f"{path}: no items")
    keys = list(data)[:n] if n is not None else list(data)
    return [_item(path, key, data[key], images) for key in keys]


def _check_images(items: dict[str, list[SugarCrepeItem]], images: Path) -> None:
    """Every image must exist: a silently shortened suite would not be the published one."""
    missing = sorted({item.image for rows in items.values() for item in rows if not item.image.is_file()})
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"SugarCrepe image not found: {missing[0]}{more}; is {images} the COCO val2017 folder?")


def read_sugarcrepe(
    root: str | Path, images: str | Path, types: Sequence[str] | None = None, n: int | None = None
) -> dict[str, list[SugarCrepeItem]]:
    """Items by negative type, in :data:`TYPES` order, read from ``root/<type>.json``.

    ``types`` picks some types (default all seven; a missing file is an error only for a type
    that is asked for), ``n`` the first items of each. Image files are checked here, before any
    model work, so a wrong image root fails in a line, not after an hour of encoding.
    """
    root, images = Path(root), Path(images)
    wanted = list(TYPES) if types is None else list(types)
    unknown = [t for t in wanted if t not in TYPES]
    if unknown:
        raise ConfigError(f"unknown SugarCrepe type {unknown[0]!r}; choose from {', '.join(TYPES)}")
    if not wanted:
        raise ConfigError("no SugarCrepe types asked for")
    if n is not None and n < 1:
        raise ConfigError(f"SugarCrepe n must be at least 1, got {n}")
    if not root.is_dir():
        raise DataError(f"SugarCrepe folder not found: {root}")
    items = {}
    for name in (t for t in TYPES if t in wanted):
        path = root / f"{name}.json"
        if not path.is_file():
            raise DataError(f"SugarCrepe file not found: {path} (leave {name!r} out of types to skip it)")
        items[name] = read_type(path, images, n)
    _check_images(items, images)
    return items
