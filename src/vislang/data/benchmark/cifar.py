"""CIFAR-10 and CIFAR-100 as their authors publish them: Python pickles of 32x32 images.

CIFAR-10 (``cifar-10-batches-py``): ``data_batch_1`` .. ``data_batch_5`` (train), ``test_batch``
and ``batches.meta`` (``label_names``); each batch holds ``data`` ([N, 3072] uint8, the red,
green then blue planes of 32x32 pixels, row-major) and ``labels``. CIFAR-100
(``cifar-100-python``): ``train``, ``test`` with ``fine_labels`` and ``coarse_labels``, and
``meta`` (``fine_label_names``, ``coarse_label_names``).

The pickles are read by an unpickler that only rebuilds numpy arrays, lists and dicts: a pickle
can otherwise run any code. Images come out as PIL images so that the model's own resize
(32 -> its input size) applies, as it does for every other evaluation set.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vislang.data.benchmark.base import ImageSet
from vislang.errors import ConfigError, DataError

FOLDERS = ("cifar-10-batches-py", "cifar-100-python")
TRAIN_10 = tuple(f"data_batch_{i}" for i in range(1, 6))
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (a CIFAR pickle holds only arrays)")
        return super().find_class(module, name)


def load_pickle(path: Path) -> dict[str, Any]:
    """One CIFAR pickle as a dict with text keys (the published files are Python 2 pickles)."""
    if not path.is_file():
        raise DataError(f"CIFAR file not found: {path}")
    try:
        data = _ArraysOnly(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except Exception as problem:  # unpickling fails in many ways on a file that is not a pickle
        raise DataError(f"{path}: not a CIFAR pickle ({type(problem).__name__}: {str(problem)[:80]})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: a CIFAR pickle holds a dict, this one a {type(data).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in data.items()}


class PixelImages(ImageSet):
    """Small decoded images ([N, H, W, 3] uint8) handed out as PIL images, so they still go through
    the model's preprocessing (unlike ``ArrayImages``, which are already at the model's size)."""

    def __init__(self, pixels: np.ndarray, tag: str) -> None:
        self.pixels, self.tag = pixels, tag
        self._digest: str | None = None

    def __len__(self) -> int:
        return len(self.pixels)

    def name(self, i: int) -> str:
        return f"{self.tag}[{i}]"

    def read(self, i: int) -> Image.Image:
        return Image.fromarray(self.pixels[i], "RGB")

    def key(self) -> str:
        if self._digest is None:  # hashed once per set: a train split is large
            self._digest = hashlib.sha1(np.ascontiguousarray(self.pixels).tobytes()).hexdigest()
        return f"PixelImages:{self.tag}:{self.pixels.shape}:{self._digest}"


@dataclass
class Cifar:
    images: PixelImages
    labels: np.ndarray
    names: list[str]  # the file's label names
    variant: str  # cifar10 | cifar100


def cifar_folder(path: Path) -> tuple[Path, str]:
    """(folder holding the pickles, ``cifar10`` or ``cifar100``): ``path`` itself or the
    published folder inside it (torchvision's root)."""
    path = Path(path)
    for folder in (path, *(path / name for name in FOLDERS)):
        if (folder / "batches.meta").is_file():
            return folder, "cifar10"
        if (folder / "meta").is_file():
            return folder, "cifar100"
    raise DataError(f"{path}: no CIFAR files (batches.meta for CIFAR-10, meta for CIFAR-100, or {' / '.join(FOLDERS)})")


def _batch(path: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    data = load_pickle(path)
    if "data" not in data or key not in data:
        raise DataError(f"{path}: a CIFAR batch has 'data' and {key!r}; this one has {', '.join(map(str, data))}")
    pixels = np.asarray(data["data"], dtype=np.uint8)
    labels = np.asarray(data[key], dtype=np.int64)
    if pixels.ndim != 2 or pixels.shape[1] != 3 * 32 * 32 or len(labels) != len(pixels):
        raise DataError(f"{path}: 'data' is {pixels.shape}, expected [N, 3072] with one label each")
    return pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _names(path: Path, key: str) -> list[str]:
    names = load_pickle(path).get(key)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DataError(f"{path}: no list of {key!r}")
    return names


def read_cifar(path: Path, split: str, labels: str, n: int | None) -> Cifar:
    """One split (``train`` or ``test``) of CIFAR-10 or -100; ``labels`` picks CIFAR-100's
    ``fine`` (100) or ``coarse`` (20) classes."""
    if split not in ("train", "test"):
        raise ConfigError(f"{path}: CIFAR has the splits train and test, not {split!r}")
    folder, variant = cifar_folder(path)
    if variant == "cifar10":
        if labels != "fine":
            raise ConfigError(f"{folder}: CIFAR-10 has one set of labels; labels: coarse is for CIFAR-100")
        files, key, names = TRAIN_10 if split == "train" else ("test_batch",), "labels", ("batches.meta", "label_names")
    else:
        files, key = (split,), f"{labels}_labels"
        names = ("meta", f"{labels}_label_names")
    parts = [_batch(folder / f, key) for f in files]
    pixels = np.concatenate([p for p, _ in parts])
    targets = np.concatenate([t for _, t in parts])
    if n is not None:
        pixels, targets = pixels[:n], targets[:n]
    classes = _names(folder / names[0], names[1])
    bad = np.flatnonzero((targets < 0) | (targets >= len(classes)))
    if len(bad):
        raise DataError(
            f"{folder}: image {bad[0]} of {split} has label {targets[bad[0]]}, outside the {len(classes)} classes"
        )
    return Cifar(PixelImages(np.ascontiguousarray(pixels), f"{folder.name}/{split}"), targets, classes, variant)
