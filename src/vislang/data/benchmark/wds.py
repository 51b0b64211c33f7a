"""CLIP_benchmark's webdataset layout, read from local files without the webdataset pipeline.

``root/classnames.txt`` and ``root/zeroshot_classification_templates.txt`` (one per line),
``root/dataset_type.txt`` (``retrieval``; classification when absent), and per split
``root/<split>/nshards.txt`` with shards ``0.tar .. (n-1).tar``. A sample is the tar members
sharing a key (webdataset's rule: the name up to the first dot of the file name, consecutive
members): the image is the first of ``webp``, ``png``, ``jpg``, ``jpeg`` present, the label
is ``cls`` (an integer as text), the captions are ``txt``, one caption per line.

Shards are indexed once (member offsets and sizes from the tar headers) and image bytes are
read on demand, so a loader worker opens the shard, seeks and reads one member.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vislang.data.benchmark.base import ImageSet, decode_or_fail
from vislang.data.shards import split_key, tar_members
from vislang.errors import ConfigError, DataError, first_line
from vislang.files import read_text

IMAGE_KEYS = ("webp", "png", "jpg", "jpeg")  # CLIP_benchmark's order of preference
_META = re.compile(r"__[^/]*__($|/)")
_BLOCK = 512  # tar's block: members are padded to it, and the archive ends with zero blocks


class ShardImages(ImageSet):
    """Images stored as tar members, each read (one seek, one read) when asked for; holds only
    paths and byte ranges, so it pickles to loader workers as is."""

    def __init__(self, shards: list[Path], spans: list[tuple[int, int, int]], names: list[str]) -> None:
        self.shards, self.spans, self.names = [Path(s) for s in shards], spans, names  # span: (shard, offset, size)

    def __len__(self) -> int:
        return len(self.spans)

    def name(self, i: int) -> str:
        return self.names[i]

    def read(self, i: int):
        shard, offset, size = self.spans[i]
        return decode_or_fail(read_member(self.shards[shard], offset, size, self.names[i]), self.names[i])


def read_member(path: Path, offset: int, size: int, name: str) -> bytes:
    """``size`` bytes at ``offset`` of a shard; a shard that changed since it was indexed is an
    error naming the member."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(size)
    except OSError as problem:
        raise DataError(f"{name}: cannot read the shard ({first_line(problem)})") from None
    if len(data) != size:
        raise DataError(f"{name}: the shard ends inside this member (was it rewritten?)")
    return data


@dataclass
class Sample:
    shard: int
    key: str
    files: dict[str, tuple[int, int]]  # extension -> (offset, size)


def shard_paths(root: Path, split: str) -> list[Path]:
    """The shards of one split: ``0.tar .. (n-1).tar`` by ``nshards.txt``, or every ``*.tar`` of
    the split folder in numeric order when there is no ``nshards.txt``."""
    folder = Path(root) / split
    if not folder.is_dir():
        raise DataError(f"{root}: no split folder {split!r} (expected {folder}/ with the .tar shards)")
    count_file = folder / "nshards.txt"
    if count_file.is_file():
        text = read_text(count_file, "shard count").strip()
        if not text.isdigit() or int(text) < 1:
            raise DataError(f"{count_file}: expected the number of shards, got {text[:40]!r}")
        shards = [folder / f"{i}.tar" for i in range(int(text))]
        missing = [s for s in shards if not s.is_file()]
        if missing:
            raise DataError(f"{count_file} says {text} shards, but {missing[0]} is missing ({len(missing)} missing)")
        return shards
    shards = sorted(
        folder.glob("*.tar"), key=lambda p: (not p.stem.isdigit(), int(p.stem) if p.stem.isdigit() else 0, p.name)
    )
    if not shards:
        raise DataError(f"{folder}: no .tar shards")
    return shards


def index_shard(path: Path, shard: int) -> list[Sample]:
    """Samples of one shard in file order; a corrupt or cut shard is one error naming it. A shard
    cut between two members would otherwise read as a shorter, valid one, so the end-of-archive
    block every tar writer leaves is required."""
    samples: list[Sample] = []
    end, last = 0, None
    try:
        size = path.stat().st_size
        for name, offset, length in tar_members(path):
            end, last = offset + -(-length // _BLOCK) * _BLOCK, name
            if end > size:
                raise DataError(f"malformed shard {path}: it ends inside member {name}")
            if _META.match(name):
                continue
            key, extension = split_key(name)
            if not extension or not key.rpartition("/")[2]:
                continue  # webdataset skips names without a key and an extension
            if not samples or samples[-1].key != key:
                samples.append(Sample(shard, key, {}))
            if extension in samples[-1].files:
                raise DataError(f"malformed shard {path}: {name} given twice in sample {key}")
            samples[-1].files[extension] = (offset, length)
    except (tarfile.ReadError, EOFError, ValueError, OSError) as problem:
        raise DataError(f"malformed shard {path}: {first_line(problem)}") from None
    if last is not None and not _end_block(path, end):
        raise DataError(f"malformed shard {path}: no end-of-archive block after {last} (the shard was cut short)")
    return samples


def _end_block(path: Path, offset: int) -> bool:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(_BLOCK) == bytes(_BLOCK)


def dataset_type(root: Path) -> str:
    """``classification`` (no ``dataset_type.txt``), ``retrieval`` or ``multilabel``."""
    file = Path(root) / "dataset_type.txt"
    return read_text(file, "dataset type").strip().lower() if file.is_file() else "classification"


def _index(root: Path, split: str, n: int | None) -> tuple[list[Path], list[Sample]]:
    shards = shard_paths(root, split)
    samples: list[Sample] = []
    for i, path in enumerate(shards):
        samples += index_shard(path, i)
        if n is not None and len(samples) >= n:
            break
    if not samples:
        raise DataError(f"{root / split}: the shards hold no samples")
    return shards, samples[:n] if n is not None else samples


def _images(shards: list[Path], samples: list[Sample]) -> ShardImages:
    spans, names = [], []
    for sample in samples:
        extension = next((e for e in IMAGE_KEYS if e in sample.files), None)
        if extension is None:
            keys = ", ".join(sample.files)
            raise DataError(
                f"{shards[sample.shard]}: sample {sample.key} has no image ({keys}; expected one of {', '.join(IMAGE_KEYS)})"
            )
        spans.append((sample.shard, *sample.files[extension]))
        names.append(f"{shards[sample.shard]}:{sample.key}.{extension}")
    return ShardImages(shards, spans, names)


def _member(shards: list[Path], sample: Sample, extension: str, what: str) -> bytes:
    if extension not in sample.files:
        raise DataError(f"{shards[sample.shard]}: sample {sample.key} has no .{extension} ({what})")
    offset, size = sample.files[extension]
    return read_member(shards[sample.shard], offset, size, f"{shards[sample.shard]}:{sample.key}.{extension}")


def _check_type(root: Path, wanted: str) -> None:
    kind = dataset_type(root)
    if kind == wanted:
        return
    if kind not in ("classification", "retrieval"):
        raise ConfigError(f"{root}: dataset_type.txt says {kind!r}; only classification and retrieval are read")
    raise ConfigError(f"{root}: a {kind} dataset (dataset_type.txt) cannot be read for {wanted}")


def read_wds_classification(root: Path, split: str, n: int | None) -> tuple[ShardImages, np.ndarray]:
    """(images, labels) of one split; labels are the samples' ``cls`` values."""
    _check_type(root, "classification")
    shards, samples = _index(Path(root), split, n)
    labels = []
    for sample in samples:
        text = _member(shards, sample, "cls", "the label")
        try:
            labels.append(int(text.decode("utf-8").strip()))
        except (UnicodeDecodeError, ValueError):
            raise DataError(
                f"{shards[sample.shard]}: sample {sample.key}.cls is not an integer ({text[:20]!r})"
            ) from None
    return _images(shards, samples), np.asarray(labels, dtype=np.int64)


def read_wds_retrieval(root: Path, split: str, n: int | None) -> tuple[ShardImages, list[list[str]]]:
    """(images, captions of each image) of one split; a ``txt`` holds one caption per line."""
    _check_type(root, "retrieval")
    shards, samples = _index(Path(root), split, n)
    captions = []
    for sample in samples:
        data = _member(shards, sample, "txt", "the captions")
        try:
            captions.append(data.decode("utf-8").splitlines())
        except UnicodeDecodeError:
            raise DataError(f"{shards[sample.shard]}: sample {sample.key}.txt is not UTF-8 text") from None
    return _images(shards, samples), captions


def root_file(root: Path, name: str) -> Path | None:
    """``root/name`` when it exists (the layout's class names and templates are optional)."""
    path = Path(root) / name
    return path if path.is_file() else None
