"""Training data: sources, the world, evaluation sets, and the loader the training loop uses."""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from vislang.config import RunConfig, SourceConfig
from vislang.data.batches import Batches, Tokenize
from vislang.data.decode import BadSample
from vislang.data.samples import FolderSamples, TableSamples, WorldSamples
from vislang.data.shards import ShardSamples, is_remote
from vislang.data.stream import ShardStream, shard_samples
from vislang.data.transforms import ImageTransform
from vislang.data.world import World
from vislang.data.world_tasks import RetrievalSet
from vislang.errors import DataError


def build_world(cfg: RunConfig) -> World:
    w = cfg.data.world
    return World(
        cfg.model.vision.image_size,
        w.seed,
        w.two_object_prob,
        w.partial_caption_prob,
        w.distinct_colors,
        w.reading_order,
    )


def build_sources(cfg: RunConfig, train: bool = True, check: bool = True) -> dict[str, object]:
    """The configured training sources by name, each serving sample ``p`` of its stream (random
    access) or lanes of raw samples (:class:`ShardStream`). With ``check``, each must hold a
    usable sample."""
    sources = cfg.data.sources
    return {
        s.name or (s.kind if len(sources) == 1 else f"{s.kind}{i}"): build_source(cfg, s, train, check)
        for i, s in enumerate(sources)
    }


def build_source(cfg: RunConfig, s: SourceConfig, train: bool = True, check: bool = True) -> object:
    d, v = cfg.data, cfg.model.vision
    if s.kind == "world":
        return WorldSamples(build_world(cfg))
    transform = ImageTransform(
        v.image_size, d.resize_mode, d.random_crop and train, d.crop_scale, interpolation=d.interpolation
    )
    common = (transform, d.max_image_pixels, cfg.train.seed, s.caption_pick)
    if s.kind == "shards" and _streamed(s):
        if not s.shuffle:
            raise DataError(
                f"data source {s.name or s.path}: shuffle: false needs random access (local shards); "
                "a stream keeps its order with shuffle_buffer: 0"
            )
        source = ShardStream(s.path, *common, resampled=s.resampled, shuffle_buffer=s.shuffle_buffer)
    elif s.kind == "shards":
        source = ShardSamples(s.path, *common, resampled=s.resampled, shuffle=s.shuffle)
    elif s.kind == "table":
        source = TableSamples(
            s.path, s.image_column, s.caption_columns, *common, resampled=s.resampled, shuffle=s.shuffle
        )
    else:
        source = FolderSamples(s.path, *common, resampled=s.resampled, shuffle=s.shuffle)
    if check:
        _check_usable(source, f"data source {s.name or s.kind} ({s.path})")
    return source


def first_pass(source: object) -> Iterator[Callable[[np.random.Generator], tuple]]:
    """One pass over a source, as ``read(rng) -> (image, caption)`` calls that may raise
    :class:`BadSample`: random-access sources in their epoch-0 order, streams in shard order."""
    if isinstance(source, ShardStream):
        for url in source.urls:
            for sample in shard_samples(url):
                yield lambda rng, sample=sample: source.decode(sample, rng)
    else:  # the world has no end: its positions count on
        for position in range(len(source)) if hasattr(source, "__len__") else itertools.count():
            yield lambda rng, p=position: source.get(p, rng)


def source_retrieval_set(source: object, n: int, seed: int) -> RetrievalSet:
    """The first ``n`` usable samples of a source (one pass) as a retrieval set: image i with its
    caption i."""
    images, texts = [], []
    rng = np.random.default_rng(seed)
    for read in first_pass(source):
        try:
            image, caption = read(rng)
        except BadSample:
            continue
        images.append(image)
        texts.append(caption)
        if len(images) == n:
            break
    return RetrievalSet(np.stack(images), texts, np.arange(len(images)))


def _streamed(s: SourceConfig) -> bool:
    if s.access != "auto":
        return s.access == "stream"
    return any(is_remote(url) for url in s.path.split("::"))


def _check_usable(source: object, what: str) -> None:
    """Stop with an error naming the source when none of its samples decodes (reads up to the
    first one that does, so a healthy source costs one sample)."""
    rng = np.random.default_rng(0)
    for read in first_pass(source):
        try:
            read(rng)
            return
        except BadSample:
            continue
    raise DataError(f"{what}: no usable sample in it (check with vislang data inspect)")


def tokenizer_corpus(cfg: RunConfig, sources: dict[str, object] | None = None) -> list[str]:
    """Captions to train the run's BPE on: ``tokenizer.train_texts`` of them, shared among the sources."""
    found = list((sources or build_sources(cfg)).values())
    per_source = -(-cfg.tokenizer.train_texts // len(found))
    return [caption for source in found for caption in source.captions(per_source)]


def drawn_batch_size(cfg: RunConfig) -> int:
    """Samples drawn per step and rank: ``train.batch_size``, or more when CiT selects from them."""
    cit = cfg.data.cit
    return cfg.train.batch_size if cit is None else math.ceil(cfg.train.batch_size / cit.keep)


def build_batches(
    cfg: RunConfig, tokenizer: Tokenize, sources: dict[str, object] | None = None, rank: int = 0, world: int = 1
) -> Batches:
    v = cfg.model.vision
    return Batches(
        sources or build_sources(cfg),
        [s.weight for s in cfg.data.sources],
        tokenizer,
        drawn_batch_size(cfg),
        v.image_mean,
        v.image_std,
        cfg.train.seed,
        cfg.data.hard_negatives,
        rank=rank,
        world=world,
        lanes=cfg.data.num_workers,
    )


def train_loader(
    cfg: RunConfig,
    tokenizer: Tokenize,
    start_step: int,
    pin_memory: bool = False,
    sources: dict[str, object] | None = None,
) -> tuple[Iterator[dict], str]:
    """This rank's batches ``start_step .. train.steps - 1`` in order, built in
    ``data.num_workers`` processes, and a one-line description of the sources for the log.
    ``train.batch_size`` is the batch of one rank (the global batch is world x that)."""
    workers = cfg.data.num_workers
    if workers:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # workers fork after the BPE trained
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    batches = build_batches(cfg, tokenizer, sources, rank, world)
    loader = DataLoader(
        batches,
        batch_size=None,
        # Batch b goes to worker (b - start) mod workers (the loader hands out indices in turn),
        # so each worker reads one lane of every streamed source.
        sampler=range(start_step, cfg.train.steps),
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
        worker_init_fn=_one_thread,
        # Its own generator: drawing the workers' base seed must not advance the global RNG,
        # or a resumed run would consume the stream differently from an uninterrupted one.
        generator=torch.Generator().manual_seed(cfg.train.seed),
    )
    return iter(loader), batches.describe()


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)
