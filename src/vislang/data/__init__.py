"""Training data: sources, the world, evaluation sets, and the loader the training loop uses."""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader

from vislang.config import RunConfig
from vislang.data.batches import Batches, Tokenize
from vislang.data.samples import FolderSamples, TableSamples, WorldSamples
from vislang.data.shards import ShardSamples
from vislang.data.transforms import ImageTransform
from vislang.data.world import World


def build_world(cfg: RunConfig) -> World:
    w = cfg.data.world
    return World(cfg.model.vision.image_size, w.seed, w.two_object_prob, w.partial_caption_prob, w.distinct_colors)


def build_sources(cfg: RunConfig, train: bool = True) -> dict[str, object]:
    """The configured sources by name, each serving sample ``p`` of its stream."""
    d, v = cfg.data, cfg.model.vision
    transform = ImageTransform(v.image_size, d.resize_mode, d.random_crop and train, d.crop_scale)
    sources: dict[str, object] = {}
    for i, s in enumerate(d.sources):
        name = s.name or (s.kind if len(d.sources) == 1 else f"{s.kind}{i}")
        if s.kind == "world":
            sources[name] = WorldSamples(build_world(cfg))
        elif s.kind == "shards":
            sources[name] = ShardSamples(s.path, transform, d.max_image_pixels, cfg.train.seed, s.caption_pick)
        elif s.kind == "table":
            sources[name] = TableSamples(
                s.path, s.image_column, s.caption_columns, transform, d.max_image_pixels, cfg.train.seed, s.caption_pick
            )
        else:
            sources[name] = FolderSamples(s.path, transform, d.max_image_pixels, cfg.train.seed, s.caption_pick)
    return sources


def tokenizer_corpus(cfg: RunConfig) -> list[str]:
    """Captions to train the run's BPE on: ``tokenizer.train_texts`` of them, shared among the sources."""
    sources = list(build_sources(cfg).values())
    per_source = -(-cfg.tokenizer.train_texts // len(sources))
    return [caption for source in sources for caption in source.captions(per_source)]


def build_batches(cfg: RunConfig, tokenizer: Tokenize) -> Batches:
    v = cfg.model.vision
    return Batches(
        build_sources(cfg),
        [s.weight for s in cfg.data.sources],
        tokenizer,
        cfg.train.batch_size,
        v.image_mean,
        v.image_std,
        cfg.train.seed,
        cfg.data.hard_negatives,
    )


def train_loader(
    cfg: RunConfig, tokenizer: Tokenize, start_step: int, pin_memory: bool = False
) -> tuple[Iterator[dict], str]:
    """Batches ``start_step .. train.steps - 1`` in order, built in ``data.num_workers``
    processes, and a one-line description of the sources for the log."""
    workers = cfg.data.num_workers
    if workers:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # workers fork after the BPE trained
    batches = build_batches(cfg, tokenizer)
    loader = DataLoader(
        batches,
        batch_size=None,
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
