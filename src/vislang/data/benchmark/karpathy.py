"""Karpathy's COCO and Flickr30k caption splits (``dataset_coco.json``, ``dataset_flickr30k.json``),
the splits retrieval results are published on.

The JSON holds ``images``: each with ``filename``, ``split`` (``train``, ``val``, ``test``, and
for COCO ``restval``), ``sentences`` (each with the ``raw`` caption) and, for COCO only,
``filepath`` (``train2014`` / ``val2014``, the folder under the image root).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vislang.data.benchmark.base import FileImages, require_files, take
from vislang.errors import DataError
from vislang.files import read_json

SPLITS = ("train", "val", "test", "restval")


def _entries(path: Path) -> list[dict[str, Any]]:
    data = read_json(path, "Karpathy split file")
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise DataError(f"{path}: a Karpathy split file is an object with an 'images' list")
    return images


def _captions(entry: Any, path: Path, i: int) -> list[str]:
    """The raw captions of ``images[i]``, checked for the fields the format has."""
    if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str) or "split" not in entry:
        raise DataError(f"{path}: images[{i}] has no 'filename' and 'split'")
    sentences = entry.get("sentences")
    if not isinstance(sentences, list) or not sentences:
        raise DataError(f"{path}: images[{i}] ({entry['filename']}) has no 'sentences'")
    raws = [s.get("raw") if isinstance(s, dict) else None for s in sentences]
    for k, raw in enumerate(raws):
        if not isinstance(raw, str):
            raise DataError(f"{path}: images[{i}].sentences[{k}] has no 'raw' caption")
    return raws


def read_karpathy(path: Path, images: Path | None, split: str, n: int | None) -> tuple[FileImages, list[list[str]]]:
    """(images, raw captions of each) of one split, in file order; ``images`` is the image root
    (default: the JSON's folder), under which COCO's ``filepath`` folders lie."""
    path = Path(path)
    if split not in SPLITS:
        raise DataError(f"{path}: Karpathy splits are {', '.join(SPLITS)}, not {split!r}")
    root = Path(images) if images is not None else path.parent
    entries = _entries(path)
    paths: list[Path] = []
    captions: list[list[str]] = []
    for i, entry in enumerate(entries):
        texts = _captions(entry, path, i)
        if entry["split"] != split:
            continue
        paths.append(root / (entry.get("filepath") or "") / entry["filename"])
        captions.append(texts)
        if n is not None and len(paths) >= n:
            break
    if not paths:
        found = sorted({str(e.get("split")) for e in entries if isinstance(e, dict)})
        raise DataError(f"{path}: no images in split {split!r} (splits in the file: {', '.join(found) or 'none'})")
    paths, captions = take(paths, n), take(captions, n)
    require_files(paths, f"{path} ({split})")
    return FileImages(paths), captions
