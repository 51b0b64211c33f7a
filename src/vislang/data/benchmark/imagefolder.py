"""A class per folder, as torchvision's ``ImageFolder`` reads it, so that a folder evaluated here
and there is the same list of (image, label) in the same order: class folders sorted by name,
each walked recursively in sorted order, files kept by torchvision's image extensions (others
ignored). ``path/<split>`` is read when it exists; otherwise ``path`` itself is the one split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vislang.data.benchmark.base import FileImages, take
from vislang.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
SPLIT_NAMES = ("train", "val", "valid", "validation", "test")


def split_folder(path: Path, split: str, own_split: str) -> Path:
    """The folder that holds the classes of ``split``: ``path/<split>`` when it exists, else
    ``path`` itself, but only for the dataset's own split (asking a flat folder for another split
    would silently evaluate the wrong images)."""
    if not path.is_dir():
        raise DataError(f"image folder not found: {path}")
    if (path / split).is_dir():
        return path / split
    if split != own_split:
        raise DataError(f"{path}: no split folder {split!r} (the folder has no {path / split})")
    splits = sorted(e.name for e in os.scandir(path) if e.is_dir() and e.name.lower() in SPLIT_NAMES)
    if splits:
        raise DataError(
            f"{path}: no split folder {split!r}, but split folders {', '.join(splits)}: set split to one of them"
        )
    return path


def class_folders(root: Path) -> list[str]:
    """Class folder names in label order (sorted, as torchvision's ``find_classes``)."""
    names = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not names:
        raise DataError(f"{root}: no class folders (an image folder holds one folder of images per class)")
    return names


def folder_images(folder: Path) -> list[Path]:
    """Image files under one class folder, recursively, in torchvision's order."""
    found = []
    for top, _, files in sorted(os.walk(folder, followlinks=True)):
        found += [Path(top, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


@dataclass
class Folder:
    """What an image folder holds: its images, their labels and the class folders' names."""

    images: FileImages
    labels: np.ndarray
    folders: list[str]
    root: Path  # the folder the classes were read from


def read_imagefolder(path: Path, split: str, own_split: str, n: int | None) -> Folder:
    """The (image, label) list of one split of an image folder, first ``n`` only when given."""
    root = split_folder(Path(path), split, own_split)
    folders = class_folders(root)
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(folders):
        found = folder_images(root / name)
        if not found:
            raise DataError(f"{root / name}: class folder holds no images (extensions {' '.join(IMAGE_EXTENSIONS)})")
        paths += found
        labels += [label] * len(found)
    paths, labels = take(paths, n), take(labels, n)
    return Folder(FileImages(paths), np.asarray(labels, dtype=np.int64), folders, root)


def classnames_file(path: Path, root: Path) -> Path | None:
    """A ``classnames.txt`` beside the class folders (or in the dataset folder above the split)."""
    for folder in (root, Path(path)):
        if (folder / "classnames.txt").is_file():
            return folder / "classnames.txt"
    return None
