"""COCO-format caption references (``captions_val2014.json`` and every file that copies its form:
nocaps, Flickr30k in COCO form, a model's own held-out set), the references captioning metrics
are published against.

The JSON is an object with ``images`` (each with an ``id`` and a ``file_name``, relative to the
image root) and ``annotations`` (each with the ``image_id`` it describes and a ``caption``); other
keys (``info``, ``licenses``, an annotation's own ``id``) are ignored. Images keep the file's
order; an image without any caption cannot be scored and is left out (counted in
``uncaptioned``). A broken file is one line naming it (and the image id or list index).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vislang.data.benchmark.base import FileImages, Retrieval
from vislang.errors import DataError
from vislang.files import read_json

ImageId = int | str


@dataclass
class CocoCaptions(Retrieval):
    """Images with their reference captions, and each image's COCO id (``image_ids[i]`` is image
    i's); ``uncaptioned``: images in the file that no annotation describes (left out)."""

    image_ids: list[ImageId] = field(default_factory=list)
    uncaptioned: int = 0


def _image_id(value: Any, path: Path, where: str) -> ImageId:
    """An image id as COCO writes it: an integer (some COCO-form files use strings)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise DataError(f"{path}: {where} has no integer or string image id (got {value!r})")
    return value


def _list(data: Any, key: str, path: Path) -> list:
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise DataError(f"{path}: a COCO caption file is an object with an {key!r} list")
    return data[key]


def _images(data: Any, path: Path) -> dict[ImageId, str]:
    """Every image id with its file name, in file order."""
    files: dict[ImageId, str] = {}
    for i, entry in enumerate(_list(data, "images", path)):
        if not isinstance(entry, dict) or "id" not in entry or not isinstance(entry.get("file_name"), str):
            raise DataError(f"{path}: images[{i}] needs an 'id' and a 'file_name'")
        image_id = _image_id(entry["id"], path, f"images[{i}]")
        if image_id in files:
            raise DataError(f"{path}: images[{i}]: image id {image_id!r} appears twice")
        files[image_id] = entry["file_name"]
    return files


def _references(data: Any, path: Path, files: dict[ImageId, str]) -> dict[ImageId, list[str]]:
    """Each image's captions, in annotation order."""
    captions: dict[ImageId, list[str]] = {}
    for j, entry in enumerate(_list(data, "annotations", path)):
        if not isinstance(entry, dict) or "image_id" not in entry or not isinstance(entry.get("caption"), str):
            raise DataError(f"{path}: annotations[{j}] needs an 'image_id' and a 'caption'")
        image_id = _image_id(entry["image_id"], path, f"annotations[{j}]")
        if image_id not in files:
            raise DataError(f"{path}: annotations[{j}] describes image id {image_id!r}, which 'images' does not list")
        captions.setdefault(image_id, []).append(entry["caption"])
    return captions


def read_coco_captions(path: str | Path, images: str | Path, n: int | None = None) -> CocoCaptions:
    """The captioned images of a COCO-format caption file (the first ``n`` of them when given),
    their files under the image root ``images``, which must all exist."""
    path, root = Path(path), Path(images)
    data = read_json(path, "COCO caption file")
    files = _images(data, path)
    captions = _references(data, path, files)
    ids = [image_id for image_id in files if image_id in captions]
    if not ids:
        raise DataError(f"{path}: no image has a caption ({len(files)} images, no annotations for any of them)")
    chosen = ids if n is None else ids[:n]
    paths = [root / files[image_id] for image_id in chosen]
    for image_id, file in zip(chosen, paths):
        if not file.is_file():
            raise DataError(f"{path}: image file of image id {image_id!r} not found: {file}")
    return CocoCaptions(
        FileImages(paths), [captions[i] for i in chosen], path.stem, chosen, uncaptioned=len(files) - len(ids)
    )
