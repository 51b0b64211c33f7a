"""Shared fixtures: a tiny config that trains in seconds on the CPU, and shards with every broken case."""

from __future__ import annotations

import json
import os
import tarfile

import pytest
import torch

from tar_helpers import png, write_tar

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
    "eval.tasks=[{type: zeroshot, n: 40}, {type: retrieval, n: 40}, {type: compositional, n: 20}]",
    "eval.batch_size=32",
]


def eval_tasks(zeroshot: int | None = 40, retrieval: int | None = 40, compositional: int | None = 20) -> str:
    """An ``eval.tasks=[...]`` override with the world's tasks of the given sizes (None: left out)."""
    sizes = {"zeroshot": zeroshot, "retrieval": retrieval, "compositional": compositional}
    return "eval.tasks=[" + ", ".join(f"{{type: {t}, n: {n}}}" for t, n in sizes.items() if n is not None) + "]"


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


@pytest.fixture
def tiny_config(tiny_overrides):
    from vislang.experiment import build_config

    return build_config({}, tiny_overrides)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A two-step TINY run directory, trained once per test module: a real checkpoint for the
    commands that take a model (index, export, embed), where what it learned does not matter."""
    from vislang.experiment import build_config
    from vislang.train.loop import train

    out = tmp_path_factory.mktemp("run")
    train(build_config({}, TINY + ["train.steps=2", "train.eval_every=2", eval_tasks(compositional=None)]), out,
          quiet=True)  # fmt: skip
    return out


@pytest.fixture
def broken_shards(tmp_path):
    good = png()
    write_tar(
        tmp_path / "00000.tar",
        [
            ("a/s0.png", good),
            ("a/s0.txt", b"a red square"),
            ("a/s1.png", good),
            ("a/s1.json", json.dumps({"captions": ["red", "a red thing"]}).encode()),
            ("a/s2.png", b"\x89PNG garbage"),
            ("a/s2.txt", b"corrupt image"),
            ("a/s3.png", good[: len(good) // 2]),
            ("a/s3.txt", b"truncated image"),
            ("a/s4.png", good),
            ("a/s4.txt", b"   \n"),
            ("a/s5.png", good),
            ("a/s5.txt", b"caf\xe9"),
            ("a/s6.png", good),
            ("a/s7.txt", b"caption without image"),
            ("a/s8.png", png(size=(200, 200))),
            ("a/s8.txt", b"too many pixels"),
        ],
    )
    write_tar(tmp_path / "00001.tar", [])  # an empty shard
    write_tar(
        tmp_path / "00002.tar", [("b/t0.png", good), ("b/t0.txt", b"fine"), ("b/t1.png", good), ("b/t1.txt", b"cut")]
    )
    with tarfile.open(tmp_path / "00002.tar") as tar:
        member = tar.getmember("b/t1.png")
        cut = member.offset_data + member.size // 2  # inside t1.png's data
    (tmp_path / "00002.tar").write_bytes((tmp_path / "00002.tar").read_bytes()[:cut])
    return tmp_path


def export_untrained(cfg, texts: list[str], out) -> str:
    """An untrained model of ``cfg`` (BPE trained on ``texts``) written as an export directory:
    a checkpoint for commands that take one, when its weights do not matter."""
    from vislang.experiment import build_objective
    from vislang.export import export_objective
    from vislang.tokenizers import BPETokenizer

    tokenizer = BPETokenizer.train(texts, 300, cfg.model.text.context_length)
    objective = build_objective(cfg, tokenizer.vocab_size, tokenizer.pad_id)
    return str(export_objective(objective, tokenizer, cfg, out))
