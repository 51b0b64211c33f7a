"""Training data: sources, the world, evaluation sets, and the loader the training loop uses."""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader

from vislang.config import RunConfig
from vislang.data.sources import TableBatches, Tokenize, WorldBatches, read_table
from vislang.data.world import World


def build_world(cfg: RunConfig) -> World:
    w = cfg.data.world
    return World(cfg.model.vision.image_size, w.seed, w.two_object_prob, w.partial_caption_prob, w.distinct_colors)


def tokenizer_corpus(cfg: RunConfig) -> list[str]:
    """Captions to train the run's BPE on: the first ``tokenizer.train_texts`` of the source."""
    n = cfg.tokenizer.train_texts
    if cfg.data.source == "world":
        return WorldBatches(build_world(cfg), None, 1, None, None).captions(n)
    return read_table(cfg.data.path, cfg.data.image_column, cfg.data.caption_column)[1][:n]


def build_batches(cfg: RunConfig, tokenizer: Tokenize) -> WorldBatches | TableBatches:
    v = cfg.model.vision
    if cfg.data.source == "world":
        return WorldBatches(
            build_world(cfg), tokenizer, cfg.train.batch_size, v.image_mean, v.image_std, cfg.data.hard_negatives
        )
    images, captions = read_table(cfg.data.path, cfg.data.image_column, cfg.data.caption_column)
    return TableBatches(
        images,
        captions,
        tokenizer,
        cfg.train.batch_size,
        v.image_size,
        v.image_mean,
        v.image_std,
        cfg.train.seed,
        cfg.data.hard_negatives,
    )


def train_loader(cfg: RunConfig, tokenizer: Tokenize, start_step: int, pin_memory: bool = False) -> Iterator[dict]:
    """Batches ``start_step .. train.steps - 1`` in order, built in ``data.num_workers`` processes."""
    workers = cfg.data.num_workers
    if workers:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # workers fork after the BPE trained
    loader = DataLoader(
        build_batches(cfg, tokenizer),
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
    return iter(loader)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)
