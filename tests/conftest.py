"""Shared fixtures: a tiny config that trains in seconds on the CPU."""

from __future__ import annotations

import os

import pytest
import torch

# Keep each test process to the CI machine's size and make CPU kernels reproducible.
torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY = [
    "model.embed_dim=32",
    "model.vision.image_size=32",
    "model.vision.patch_size=8",
    "model.vision.width=32",
    "model.vision.depth=1",
    "model.vision.heads=2",
    "model.text.width=32",
    "model.text.depth=1",
    "model.text.heads=2",
    "model.text.context_length=24",
    "tokenizer.vocab_size=300",
    "tokenizer.train_texts=2000",
    "train.batch_size=16",
    "train.steps=12",
    "train.warmup_steps=2",
    "train.log_every=2",
    "train.eval_every=6",
    "train.checkpoint_every=6",
    "train.threads=1",
    "data.num_workers=0",
    "eval.n_classify=40",
    "eval.n_retrieval=40",
    "eval.n_probe=20",
    "eval.batch_size=32",
]


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


@pytest.fixture
def tiny_config(tiny_overrides):
    from vislang.config import build_config

    return build_config({}, tiny_overrides)
