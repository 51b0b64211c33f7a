"""Training data: sources, the world, evaluation sets, and the loader the training loop uses."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from vislang.config import RunConfig, SourceConfig
from vislang.data.batches import Batches, Tokenize
from vislang.data.decode import BadSample
from vislang.data.samples import FolderSamples, TableSamples, WorldSamples
from vislang.data.shards import ShardSamples
from vislang.data.stream import ShardStream, is_remote
from vislang.data.transforms import ImageTransform
from vislang.data.world import World
from vislang.errors import DataError


def build_world(cfg: RunConfig) -> World:
    w = cfg.data.world
    return World(cfg.model.vision.image_size, w.seed, w.two_object_prob, w.partial_caption_prob, w.distinct_colors)


def build_sources(cfg: RunConfig, train: bool = True) -> dict[str, object]:
    """The configured sources by name, each serving sample ``p`` of its stream (random access) or
    lanes of raw samples (:class:`ShardStream`). Each must hold a usable sample."""
    d, v = cfg.data, cfg.model.vision
    transform = ImageTransform(v.image_size, d.resize_mode, d.random_crop and train, d.crop_scale)
    sources: dict[str, object] = {}
    for i, s in enumerate(d.sources):
        name = s.name or (s.kind if len(d.sources) == 1 else f"{s.kind}{i}")
        common = (transform, d.max_image_pixels, cfg.train.seed, s.caption_pick)
        if s.kind == "world":
            sources[name] = WorldSamples(build_world(cfg))
            continue
        if s.kind == "shards" and _streamed(s):
            source = ShardStream(s.path, *common, resampled=s.resampled, shuffle_buffer=s.shuffle_buffer)
        elif s.kind == "shards":
            source = ShardSamples(s.path, *common, resampled=s.resampled)
        elif s.kind == "table":
            source = TableSamples(s.path, s.image_column, s.caption_columns, *common, resampled=s.resampled)
        else:
            source = FolderSamples(s.path, *common, resampled=s.resampled)
        _check_usable(source, f"data source {name} ({s.path})")
        sources[name] = source
    return sources


def _streamed(s: SourceConfig) -> bool:
    if s.access != "auto":
        return s.access == "stream"
    return any(is_remote(url) for url in s.path.split("::"))


def _check_usable(source: object, what: str) -> None:
    """Stop with an error naming the source when none of its samples decodes (reads up to the
    first one that does, so a healthy source costs one sample)."""
    if isinstance(source, ShardStream):
        try:
            source.first_usable()
        except DataError as error:
            raise DataError(f"{what}: {error}") from None
        return
    rng = np.random.default_rng(0)
    for position in range(len(source)):
        try:
            source.get(position, rng)
            return
        except BadSample:
            continue
    raise DataError(f"{what}: none of its {len(source)} samples is usable (check with vislang data inspect)")


def tokenizer_corpus(cfg: RunConfig, sources: dict[str, object] | None = None) -> list[str]:
    """Captions to train the run's BPE on: ``tokenizer.train_texts`` of them, shared among the sources."""
    found = list((sources or build_sources(cfg)).values())
    per_source = -(-cfg.tokenizer.train_texts // len(found))
    return [caption for source in found for caption in source.captions(per_source)]


def build_batches(
    cfg: RunConfig, tokenizer: Tokenize, sources: dict[str, object] | None = None, rank: int = 0, world: int = 1
) -> Batches:
    v = cfg.model.vision
    return Batches(
        sources or build_sources(cfg),
        [s.weight for s in cfg.data.sources],
        tokenizer,
        cfg.train.batch_size,
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
