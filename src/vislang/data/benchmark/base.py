"""What an evaluation dataset is, once read from its files: images that decode on demand, and
the labels, class names, prompts or captions that go with them.

Readers (one module per published format) return these plain containers; evaluators in
``vislang.eval`` consume them and never see a file format. Images stay on disk (or as encoded
bytes) until the encoder's workers decode them, so a 50k-image validation set costs paths,
not pixels.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from vislang.data.decode import BadSample, open_image
from vislang.errors import DataError

MAX_PIXELS = 178_956_970  # PIL's own decompression-bomb limit


class ImageSet(ABC):
    """N images, each read on demand (in a loader worker)."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def read(self, i: int) -> Image.Image | np.ndarray:
        """Image ``i`` as an RGB PIL image, or as a ready [H, W, 3] uint8 array (the built-in world).
        A file that is missing or does not decode raises :class:`DataError` naming it."""

    @abstractmethod
    def name(self, i: int) -> str:
        """What identifies image ``i`` to a person: its path or key."""

    def encoded(self, i: int) -> bytes | Path | None:
        """Where image ``i`` is stored undecoded (a path or the encoded bytes), for a reader that
        decodes it under its own rules (training's pixel limit and skip reasons); None for images
        held decoded in memory."""
        return None

    def key(self) -> str:
        """Identity of this collection (for the feature cache): same key, same images in the same order."""
        digest = hashlib.sha1()
        for i in range(len(self)):
            digest.update(self.name(i).encode() + b"\0")
        return f"{type(self).__name__}:{len(self)}:{digest.hexdigest()}"

    def subset(self, indices: Sequence[int]) -> ImageSet:
        """These images at ``indices``, in that order (read from the same files)."""
        return Subset(self, list(indices))


class Subset(ImageSet):
    def __init__(self, parent: ImageSet, indices: list[int]) -> None:
        self.parent, self.indices = parent, indices

    def __len__(self) -> int:
        return len(self.indices)

    def name(self, i: int) -> str:
        return self.parent.name(self.indices[i])

    def encoded(self, i: int) -> bytes | Path | None:
        return self.parent.encoded(self.indices[i])

    def read(self, i: int) -> Image.Image | np.ndarray:
        return self.parent.read(self.indices[i])


class FileImages(ImageSet):
    """Images at file paths."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = [Path(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, i: int) -> str:
        return str(self.paths[i])

    def read(self, i: int) -> Image.Image:
        return decode_or_fail(self.paths[i], str(self.paths[i]))

    def encoded(self, i: int) -> Path:
        return self.paths[i]


class BytesImages(ImageSet):
    """Encoded images held in memory (a parquet column, a shard member), each with a name."""

    def __init__(self, blobs: list[bytes], names: list[str]) -> None:
        if len(blobs) != len(names):
            raise ValueError("one name per image")
        self.blobs, self.names = blobs, names

    def __len__(self) -> int:
        return len(self.blobs)

    def name(self, i: int) -> str:
        return self.names[i]

    def read(self, i: int) -> Image.Image:
        return decode_or_fail(self.blobs[i], self.names[i])

    def encoded(self, i: int) -> bytes:
        return self.blobs[i]


class ArrayImages(ImageSet):
    """Images already decoded and sized (the built-in world renders at the model's size)."""

    def __init__(self, images: np.ndarray, tag: str) -> None:
        self.images, self.tag = images, tag

    def __len__(self) -> int:
        return len(self.images)

    def name(self, i: int) -> str:
        return f"{self.tag}[{i}]"

    def read(self, i: int) -> np.ndarray:
        return self.images[i]

    def key(self) -> str:
        return f"ArrayImages:{self.tag}:{self.images.shape}:{hashlib.sha1(self.images.tobytes()).hexdigest()}"


def decode_or_fail(source: bytes | str | Path, name: str) -> Image.Image:
    """Decode one evaluation image; a bad one stops the evaluation with a line naming it (an
    evaluation set with a silently dropped image would not be the published set)."""
    try:
        return open_image(source, MAX_PIXELS)
    except BadSample as error:
        raise DataError(f"{name}: {error.reason.replace('_', ' ')}") from None


@dataclass
class Classification:
    """Labelled images: ``labels[i]`` indexes ``classnames``; ``templates`` contain ``{c}`` (or
    ``{}``) where the class name goes; ``descriptions`` maps a class name to its own prompts
    (CuPL's and CLIP_benchmark's JSON); ``prompts`` says which of the two make the classifier."""

    images: ImageSet
    labels: np.ndarray
    classnames: list[str]
    templates: list[str]
    name: str
    descriptions: dict[str, list[str]] | None = None
    prompts: str = "templates"  # templates | descriptions | both

    def class_prompts(self) -> list[list[str]]:
        """Every class's prompt texts, in class order."""
        out = []
        for name in self.classnames:
            texts: list[str] = []
            if self.prompts in ("templates", "both"):
                texts += [t.format(name, c=name) for t in self.templates]
            if self.prompts in ("descriptions", "both"):
                if not self.descriptions or not self.descriptions.get(name):
                    raise DataError(f"{self.name}: no descriptions for class {name!r}")
                texts += list(self.descriptions[name])
            out.append(texts)
        return out


@dataclass
class Retrieval:
    """Images with their captions (one or several each): text j of ``captions[i]`` describes image i."""

    images: ImageSet
    captions: list[list[str]]
    name: str

    def texts(self) -> tuple[list[str], np.ndarray]:
        """All captions flat, and the image index of each."""
        flat = [c for cs in self.captions for c in cs]
        owner = np.repeat(np.arange(len(self.captions)), [len(cs) for cs in self.captions])
        return flat, owner


@dataclass
class Counts:
    """Skipped rows by reason, for a reader whose format documents skipping."""

    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


T = TypeVar("T")


def take(items: Sequence[T], n: int | None) -> list[T]:
    """The first ``n`` items (all when ``n`` is None): quick runs read a prefix in file order."""
    return list(items if n is None else items[:n])


def require_files(paths: Sequence[Path], where: str, names: Sequence[str] | None = None) -> None:
    """Stop before any encoding when image files are missing: one line naming the first missing
    file (``names[i]`` says where it was listed, e.g. a manifest row) and how many are missing."""
    missing = [i for i, path in enumerate(paths) if not os.path.isfile(path)]
    if not missing:
        return
    first = missing[0]
    at = f" ({names[first]})" if names is not None else ""
    raise DataError(f"{where}: image not found{at}: {paths[first]} ({len(missing)} of {len(paths)} images missing)")
