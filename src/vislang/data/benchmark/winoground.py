"""Winoground (Thrush et al. 2022) in its published form: ``examples.jsonl`` and ``images/``.

Each line of ``examples.jsonl`` is one example: ``id`` (an integer), ``caption_0`` and
``caption_1`` (the same words in two orders), ``image_0`` and ``image_1`` (names without
extension: the pictures are ``images/<name>.png``), the linguistic ``tag`` (e.g.
``Adjective-Age``), ``secondary_tag`` (often empty), ``num_main_preds`` (main predicates, 1 or
2) and ``collapsed_tag`` (``Object``, ``Relation`` or ``Both``: what the swap moves). Caption
``k`` describes image ``k``.

The reader is strict: a benchmark with a silently dropped example would not be the published
one, so a broken line (even the last) is an error naming the file and line number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vislang.errors import ConfigError, DataError
from vislang.files import read_text

KEYS = (
    "id",
    "caption_0",
    "caption_1",
    "image_0",
    "image_1",
    "tag",
    "secondary_tag",
    "num_main_preds",
    "collapsed_tag",
)
STRINGS = ("caption_0", "caption_1", "image_0", "image_1", "tag", "secondary_tag", "collapsed_tag")
COLLAPSED_TAGS = ("Object", "Relation", "Both")


@dataclass(frozen=True)
class WinogroundItem:
    """One Winoground example: caption ``k`` goes with image ``k``."""

    id: int
    captions: tuple[str, str]
    images: tuple[Path, Path]
    tag: str
    secondary_tag: str
    num_main_preds: int
    collapsed_tag: str


def _parse(record: object, where: str, images: Path) -> WinogroundItem:
    """One line's record as an item; ``where`` is ``file: line N`` for the error messages."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got a {type(record).__name__}")
    for key in KEYS:
        if key not in record:
            raise DataError(f"{where}: no key {key!r}")
    for key in STRINGS:
        if not isinstance(record[key], str):
            raise DataError(f"{where}: {key!r} must be a string, got {record[key]!r}")
    for key in ("id", "num_main_preds"):
        if not isinstance(record[key], int) or isinstance(record[key], bool):
            raise DataError(f"{where}: {key!r} must be an integer, got {record[key]!r}")
    for key in ("caption_0", "caption_1", "image_0", "image_1"):
        if not record[key].strip():
            raise DataError(f"{where}: {key!r} is empty")
    if record["collapsed_tag"] not in COLLAPSED_TAGS:
        raise DataError(f"{where}: collapsed_tag {record['collapsed_tag']!r} is not one of {', '.join(COLLAPSED_TAGS)}")
    return WinogroundItem(
        record["id"],
        (record["caption_0"], record["caption_1"]),
        (images / f"{record['image_0']}.png", images / f"{record['image_1']}.png"),
        record["tag"],
        record["secondary_tag"],
        record["num_main_preds"],
        record["collapsed_tag"],
    )


def read_examples(path: str | Path, images: str | Path, n: int | None = None) -> list[WinogroundItem]:
    """The examples of an ``examples.jsonl`` file (the first ``n`` when given), images under ``images``."""
    path, images = Path(path), Path(images)
    items: list[WinogroundItem] = []
    seen: dict[int, int] = {}
    for number, line in enumerate(read_text(path, "Winoground examples file").splitlines(), 1):
        if not line.strip():
            continue
        if n is not None and len(items) == n:
            break
        where = f"{path}: line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{where}: not a JSON record ({error.msg} at column {error.colno})") from None
        item = _parse(record, where, images)
        if item.id in seen:
            raise DataError(f"{where}: id {item.id} already used on line {seen[item.id]}")
        seen[item.id] = number
        items.append(item)
    if not items:
        raise DataError(f"{path}: no examples")
    return items


def read_winoground(root: str | Path, n: int | None = None) -> list[WinogroundItem]:
    """Winoground from a folder holding ``examples.jsonl`` and ``images/``; every image is
    checked here, before any model work."""
    root = Path(root)
    if n is not None and n < 1:
        raise ConfigError(f"Winoground n must be at least 1, got {n}")
    if not root.is_dir():
        raise DataError(f"Winoground folder not found: {root}")
    items = read_examples(root / "examples.jsonl", root / "images", n)
    missing = [p for item in items for p in item.images if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"Winoground image not found: {missing[0]}{more}")
    return items
