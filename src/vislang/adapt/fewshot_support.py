"""SuS-X's image folders: ``--pool DIR`` (any collection, retrieved from by text similarity,
labels unused) and ``--support DIR`` (SuS-SD's form: images generated for each class, e.g. by
Stable Diffusion from "a photo of a {class}", one subfolder per class, each image labelled by
its folder; no retrieval).

A support subfolder belongs to a class whose name it is exactly, or equals after lower-casing
both and replacing ``_`` by a space (``golden_retriever`` is the class ``Golden Retriever``). A
subfolder that names no class of any task is ignored with a warning; a class without a
subfolder, or whose subfolders hold no readable image, is an error naming the class and the
folder. Files that do not decode are skipped and counted. A class with more than
``--support-per-class`` images keeps a seeded draw of that many.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vislang.data.benchmark import FileImages
from vislang.data.benchmark.base import MAX_PIXELS
from vislang.data.decode import BadSample, open_image
from vislang.data.samples import image_files
from vislang.errors import DataError


def pool_files(folder: str | Path) -> list[Path]:
    """Every image file under ``folder`` (recursive, sorted): any collection, labelled or not;
    names and folders are never read as labels."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"--pool: not a folder: {root}")
    files = image_files(root)
    if not files:
        raise DataError(f"--pool {root}: no image files in it")
    return files


def same_name(folder: str, classname: str) -> bool:
    """A subfolder's name against a class name: exact, or after lower-casing and ``_`` -> space."""
    return folder == classname or folder.lower().replace("_", " ") == classname.lower().replace("_", " ")


@dataclass
class SupportFolder:
    """A support folder, read: per subfolder its readable image files; the unreadable ones by reason."""

    root: Path
    classes: dict[str, list[Path]]
    skipped: dict[str, list[str]] = field(default_factory=dict)

    @property
    def unreadable(self) -> int:
        """How many image files did not decode (skipped)."""
        return sum(len(names) for names in self.skipped.values())


@dataclass
class SupportSet:
    """One task's support set: the images, their class indices, and how many each class has."""

    images: FileImages
    labels: np.ndarray
    per_class: dict[str, int]
    folder: str
    unreadable: int

    def summary(self) -> dict[str, object]:
        """What the JSON and the table report."""
        return {"folder": self.folder, "images": len(self.labels), "per_class": self.per_class,
                "unreadable": self.unreadable}  # fmt: skip


def read_support_folder(folder: str | Path) -> SupportFolder:
    """Every subfolder's image files, each opened once: those that do not decode are skipped, by reason."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"--support: not a folder: {root}")
    subfolders = sorted(p for p in root.iterdir() if p.is_dir())
    if not subfolders:
        raise DataError(f"--support {root}: no class subfolders in it (one subfolder of images per class)")
    classes, skipped = {}, {}
    for sub in subfolders:
        good = []
        for path in image_files(sub):
            try:
                open_image(path, MAX_PIXELS).close()
                good.append(path)
            except BadSample as bad:
                skipped.setdefault(bad.reason.replace("_", " "), []).append(str(path.relative_to(root)))
        classes[sub.name] = good
    return SupportFolder(root, classes, skipped)


def support_set(folder: SupportFolder, classnames: list[str], per_class: int, seed: int, name: str) -> SupportSet:
    """``folder``'s images of each class of ``classnames``, labelled by their subfolder; at most
    ``per_class`` a class (a seeded draw, kept in file order)."""
    rng = np.random.default_rng(seed)
    paths, labels, counts = [], [], {}
    for index, classname in enumerate(classnames):
        mine = [sub for sub in folder.classes if sub == classname] or [
            sub for sub in folder.classes if same_name(sub, classname)
        ]
        if not mine:
            raise DataError(f"--support {folder.root}: no subfolder for the class {classname!r} of {name}")
        files = [path for sub in mine for path in folder.classes[sub]]
        if not files:
            raise DataError(f"--support {folder.root}: no readable image for the class {classname!r} "
                            f"(subfolder {mine[0]})")  # fmt: skip
        if len(files) > per_class:
            files = [files[i] for i in np.sort(rng.choice(len(files), per_class, replace=False))]
        paths += files
        labels += [index] * len(files)
        counts[classname] = len(files)
    return SupportSet(FileImages(paths), np.asarray(labels, dtype=np.int64), counts, str(folder.root),
                      folder.unreadable)  # fmt: skip


def support_sets(
    support_dir: str, classnames: dict[str, list[str]], per_class: int, seed: int
) -> tuple[dict[str, SupportSet], list[str], list[str]]:
    """Each train split's support set from ``support_dir`` (keyed as ``classnames``), the notes
    (what was used, what was skipped) and the warnings (subfolders that name no class)."""
    folder = read_support_folder(support_dir)
    sets = {key: support_set(folder, names, per_class, seed, key) for key, names in classnames.items()}
    every = [name for names in classnames.values() for name in names]
    unmatched = [sub for sub in folder.classes if not any(same_name(sub, name) for name in every)]
    warnings = []
    if unmatched:
        warnings.append(f"--support {folder.root}: {len(unmatched)} subfolder(s) name no class and are ignored: "
                        f"{', '.join(unmatched)}")  # fmt: skip
    notes = []
    for key, s in sets.items():
        short = [c for c, n in s.per_class.items() if n < per_class]
        line = f"{key}: SuS-X's given support is {len(s.labels)} images from {folder.root} (no retrieval)"
        if short:
            line += f"; fewer than --support-per-class {per_class} for {', '.join(short)}"
        notes.append(line)
    if folder.skipped:
        first = next(iter(folder.skipped.items()))
        notes.append(f"--support {folder.root}: {folder.unreadable} unreadable image file(s) skipped "
                     f"({first[0]}: {first[1][0]}{', ...' if folder.unreadable > 1 else ''})")  # fmt: skip
    return sets, notes, warnings
