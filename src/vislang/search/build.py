"""The embedding step of ``vislang index``: the parts of one share of an index, and the job checks.

Images are decoded, preprocessed and thumbnailed in DataLoader worker processes; the model runs
in the calling process under ``torch.inference_mode``. A batch never spans two parts, so a part's
batches, and therefore its embeddings, are the same whichever process embeds it, with whatever
other parts: one process, ranks of ``torchrun`` and Ray tasks write the same files. A part is
written the moment its last batch is embedded; parts that exist are skipped, so a job killed at
any point continues where it stopped.

A job's identity (model, sources, part size, what goes into a part) is written to ``.job.json``
before the first part, because the manifest is written last: a rerun into the same directory
with anything else is refused instead of mixing two collections.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from vislang.config.data import DataConfig
from vislang.data.decode import BadSample, open_image
from vislang.errors import ConfigError, DataError
from vislang.search import layout
from vislang.search.items import Items, Raw

JOB = ".job.json"
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_MAX_PIXELS = DataConfig.model_fields["max_image_pixels"].default  # training's decompression-bomb guard


@dataclass(frozen=True)
class IndexOptions:
    """How parts are made: their size, batches, decoding workers, thumbnails, device, precision."""

    part_size: int = 4096
    batch_size: int = 256
    workers: int = 0
    thumbnail_size: int | None = 160  # None: no thumbnails
    max_pixels: int = DEFAULT_MAX_PIXELS
    device: str = "cpu"
    precision: str = "fp32"
    quantize: str | None = None  # "int8": the towers' linear layers in int8 (vislang.search.quantize)
    quiet: bool = False


def thumbnail(image: Image.Image, size: int) -> bytes:
    """A JPEG of the image shrunk (never enlarged) to fit ``size`` x ``size``."""
    small = image.copy()
    small.thumbnail((size, size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


@dataclass
class Row:
    """One decoded sample (in a worker): model input and thumbnail, or the reason it is skipped."""

    position: int
    key: str
    caption: str | None
    pixels: torch.Tensor | None = None
    thumbnail: bytes | None = None
    reason: str | None = None


def decode(position: int, raw: Raw, preprocess: Callable, options: IndexOptions) -> Row:
    if raw.image is None:
        return Row(position, raw.key, raw.caption, reason=raw.reason or "bad_image")
    try:
        image = open_image(raw.image, options.max_pixels)
    except BadSample as bad:
        return Row(position, raw.key, raw.caption, reason=bad.reason)
    small = thumbnail(image, options.thumbnail_size) if options.thumbnail_size else None
    return Row(position, raw.key, raw.caption, preprocess(image), small)


class _Positions(torch.utils.data.Dataset):
    """Random-access positions -> decoded rows (read in the worker, so file reads are parallel)."""

    def __init__(self, items: Items, preprocess: Callable, options: IndexOptions) -> None:
        self.items, self.preprocess, self.options = items, preprocess, options

    def __getitem__(self, position: int) -> Row:
        return decode(position, self.items.read(position), self.preprocess, self.options)


class _Raws(torch.utils.data.Dataset):
    """A part's raw streamed samples (read in order by the main process) -> decoded rows."""

    def __init__(self, raws: list[tuple[int, Raw]], preprocess: Callable, options: IndexOptions) -> None:
        self.raws, self.preprocess, self.options = raws, preprocess, options

    def __len__(self) -> int:
        return len(self.raws)

    def __getitem__(self, i: int) -> Row:
        return decode(*self.raws[i], self.preprocess, self.options)


def _collate(rows: list[Row]) -> tuple[list[Row], torch.Tensor | None]:
    """A batch's rows (without pixels) and the kept rows' pixels as one tensor (one transfer
    from the worker instead of one per image)."""
    kept = [r.pixels for r in rows if r.reason is None]
    for r in rows:
        r.pixels = None
    return rows, torch.stack(kept) if kept else None


@dataclass
class _Part:
    """A part's rows as its batches arrive."""

    ids: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    captions: list[str | None] = field(default_factory=list)
    thumbnails: list[bytes | None] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    texts: list[np.ndarray] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


class Embedder:
    """The model's normalised image and caption embeddings of decoded batches, gathered into
    parts and written as each part completes."""

    def __init__(self, model, tokenizer, preprocess: Callable, root: Path, options: IndexOptions) -> None:
        if options.precision not in PRECISIONS:
            raise ConfigError(f"precision {options.precision!r}: choose one of {', '.join(PRECISIONS)}")
        self.model, self.tokenizer, self.preprocess = model, tokenizer, preprocess
        self.root, self.options = root, options
        self.device = torch.device(options.device)
        self.dim: int | None = None
        self.parts: dict[int, _Part] = {}
        self.written = 0
        preprocess(Image.new("RGB", (64, 64)))  # what preprocessing imports lazily: once, before workers fork

    def _encode(self, encode: Callable, x: torch.Tensor) -> np.ndarray:
        dtype = PRECISIONS[self.options.precision]
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            out = encode(x.to(self.device))
        out = F.normalize(torch.as_tensor(out).float(), dim=-1).cpu().numpy()
        self.dim = out.shape[1]
        return out

    def add(self, part: int, batch: tuple[list[Row], torch.Tensor | None]) -> None:
        rows, pixels = batch
        p = self.parts.setdefault(part, _Part())
        kept = [r for r in rows if r.reason is None]
        for r in rows:
            if r.reason is not None:
                p.skipped[r.reason] = p.skipped.get(r.reason, 0) + 1
        if not kept:
            return
        p.images.append(self._encode(self.model.encode_image, pixels))
        texts = np.zeros_like(p.images[-1])
        with_caption = [i for i, r in enumerate(kept) if r.caption is not None]
        if with_caption:
            tokens = self.tokenizer([kept[i].caption for i in with_caption])
            texts[with_caption] = self._encode(self.model.encode_text, tokens)
        p.texts.append(texts)
        p.ids += [r.position for r in kept]
        p.keys += [r.key for r in kept]
        p.captions += [r.caption for r in kept]
        p.thumbnails += [r.thumbnail for r in kept]

    def _width(self) -> int:
        """The embedding width, from one blank image (a part whose every sample was skipped is
        still written, empty, with its counts)."""
        if self.dim is None:
            blank = self.preprocess(Image.new("RGB", (64, 64)))[None]
            self._encode(self.model.encode_image, blank)
        return self.dim

    def finish(self, part: int) -> None:
        p = self.parts.pop(part, _Part())
        dim = self._width() if not p.images else p.images[0].shape[1]
        images = np.concatenate(p.images) if p.images else np.zeros((0, dim), np.float32)
        texts = np.concatenate(p.texts) if any(c is not None for c in p.captions) else None
        layout.write_part(self.root, part, p.ids, p.keys, p.captions, images, texts, p.thumbnails, p.skipped)
        self.written += 1


def _loader(dataset, batches: list[list[int]], options: IndexOptions) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=options.workers, collate_fn=_collate,
        prefetch_factor=4 if options.workers else None,
    )  # fmt: skip


def _progress(total: int | None, options: IndexOptions, rank: int) -> tqdm:
    quiet = options.quiet or rank != 0 or not sys.stderr.isatty()
    return tqdm(total=total, unit="image", desc="embed", disable=quiet, dynamic_ncols=True)


def _part_batches(part: int, stop: int, options: IndexOptions) -> list[list[int]]:
    """The batches (lists of positions) of one part of the random-access region ``0 .. stop``."""
    positions = range(part * options.part_size, min((part + 1) * options.part_size, stop))
    return [list(positions[i : i + options.batch_size]) for i in range(0, len(positions), options.batch_size)]


def embed_share(
    model, tokenizer, preprocess: Callable, items: Items, root: str | Path, options: IndexOptions,
    rank: int = 0, world: int = 1,
) -> dict:  # fmt: skip
    """Embed and write every missing part ``p`` with ``p % world == rank``; returns how many
    parts were written and the number of positions of the whole collection (streams included)."""
    root = Path(root)
    done = layout.done_parts(root)
    embedder = Embedder(model, tokenizer, preprocess, root, options)
    size, ps = items.random_size, options.part_size
    # the random-access region: whole parts, and the first part shared with a stream is left to it
    parts = range(size // ps if items.streams else -(-size // ps))
    work = [p for p in parts if p % world == rank and p not in done]
    plan = [(p, b) for p in work for b in _part_batches(p, size, options)]
    bar = _progress(sum(len(b) for _, b in plan) if not items.streams else None, options, rank)
    with bar:
        loader = _loader(_Positions(items, preprocess, options), [b for _, b in plan], options) if plan else []
        batches = iter(loader)
        for part, batch in plan:
            embedder.add(part, next(batches))
            if batch[-1] == min((part + 1) * ps, size) - 1:
                embedder.finish(part)
            bar.update(len(batch))
        del batches  # its worker processes stop here, not at interpreter exit (an abort under torchrun)
        total = _embed_streams(embedder, items, done, rank, world, bar) if items.streams else size
    return {"written": embedder.written, "positions": total}


def _stream_parts(items: Items, part_size: int) -> Iterator[tuple[int, list[tuple[int, Raw]]]]:
    """(part, its raw samples) of the parts that hold streamed positions, in order; the
    random-access positions of a part the stream starts in come first."""
    start = items.random_size
    first = start // part_size
    head = [(q, items.read(q)) for q in range(first * part_size, start)]
    positions = itertools.count(start)
    chunk = head
    for raw in items.stream():
        position = next(positions)
        if position // part_size != first:
            yield first, chunk
            first, chunk = position // part_size, []
        chunk.append((position, raw))
    if chunk or start % part_size:
        yield first, chunk


def _embed_streams(embedder: Embedder, items: Items, done: set[int], rank: int, world: int, bar: tqdm) -> int:
    """Embed this share's missing parts of the streamed region; the samples of others are read
    (a stream cannot seek) but not decoded. Returns the collection's total positions."""
    options, total = embedder.options, items.random_size
    for part, raws in _stream_parts(items, options.part_size):
        total = max(total, raws[-1][0] + 1) if raws else total
        if part % world != rank or part in done:
            continue
        batches = [
            list(range(i, min(i + options.batch_size, len(raws)))) for i in range(0, len(raws), options.batch_size)
        ]
        for batch, rows in zip(batches, _loader(_Raws(raws, embedder.preprocess, options), batches, options)):
            embedder.add(part, rows)
            bar.update(len(batch))
        embedder.finish(part)
    return total


# -- the job: identity, refusal of another job's directory, the manifest -----------------------------


def job_identity(model: str | Path, items: Items, options: IndexOptions, columns: dict) -> dict:
    """What makes two runs the same job (the parts of one are valid for the other)."""
    return {
        "model": str(Path(model).resolve()) if Path(model).exists() else str(model),
        "sources": items.specs,
        "part_size": options.part_size,
        "columns": columns,
        "thumbnail_size": options.thumbnail_size,
        "max_pixels": options.max_pixels,
        "quantize": options.quantize,  # parts of int8 and fp32 embeddings must not mix
    }


def recorded_identity(root: Path) -> dict | None:
    """The identity of the job that wrote ``root``: its manifest's, else its job file's."""
    if (root / layout.MANIFEST).is_file():
        return layout.read_manifest(root).get("job")
    if (root / JOB).is_file() and layout.done_parts(root):  # a job file alone protects nothing yet
        return json.loads((root / JOB).read_text())
    return None


def check_job(root: str | Path, identity: dict, overwrite: bool = False) -> None:
    """Refuse, in one line, a directory that holds another job's index or something else."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DataError(f"--out {root}: a file, not a directory")
    recorded = recorded_identity(root) if root.is_dir() else None
    if overwrite:
        return
    if recorded is None and (layout.done_parts(root) or (root / layout.MANIFEST).is_file()):
        raise DataError(f"--out {root}: holds an index of an unknown job; use --overwrite to replace it")
    ours = {JOB, layout.PARTS}
    if recorded is None and root.is_dir() and any(p.name not in ours for p in root.iterdir()):
        raise DataError(f"--out {root}: the directory holds other files, not a vislang index; choose another")
    for name in identity:
        if recorded is not None and recorded.get(name) != identity[name]:
            raise DataError(
                f"--out {root}: already an index with {name} {recorded.get(name)!r}, this job has "
                f"{identity[name]!r}; use --overwrite to replace it, or another --out"
            )


def start_job(root: str | Path, identity: dict, overwrite: bool = False) -> None:
    """Prepare ``root`` for the job (once, by one process): with ``overwrite`` an earlier
    index's files are removed; the job file is written before any part."""
    root = Path(root)
    if overwrite:
        shutil.rmtree(root / layout.PARTS, ignore_errors=True)
        for name in [layout.MANIFEST, JOB, *layout.FAISS_FILES.values()]:
            (root / name).unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{JOB}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(identity, indent=2, sort_keys=True) + "\n")
    tmp.replace(root / JOB)


def summarise(root: str | Path) -> dict:
    """Counts over the written parts (rows, captions, skipped samples by reason)."""
    root = Path(root)
    rows = captions = 0
    skipped: dict[str, int] = {}
    for part in sorted(layout.done_parts(root)):
        path = layout.part_path(root, part)
        column = pq.read_table(path, columns=["caption"]).column("caption")
        rows, captions = rows + len(column), captions + len(column) - column.null_count
        for reason, n in layout.part_skipped(root, part).items():
            skipped[reason] = skipped.get(reason, 0) + n
    return {"count": rows, "captions": captions, "skipped": dict(sorted(skipped.items()))}


def missing_parts(root: str | Path, positions: int, part_size: int) -> list[int]:
    """Parts of a collection of ``positions`` samples not yet written."""
    done = layout.done_parts(root)
    return [p for p in range(-(-positions // part_size)) if p not in done]
