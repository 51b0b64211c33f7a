"""Every objective trains through the one loop on the built-in world, and captioners caption."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import eval_tasks
from vislang.data.world import World
from vislang.experiment import build_config
from vislang.train.loop import train

FEW_STEPS = ["train.steps=4", "train.eval_every=4", "train.checkpoint_every=4"]


@pytest.mark.parametrize(
    ("objective", "extra", "loss_parts"),
    [
        ("cap", [], {"train/caption"}),
        ("cappa", [], {"train/caption", "train/parallel_share"}),
        ("coca", ["objective.decoder.n_queries=4"], {"train/contrastive", "train/caption"}),
        (
            "clip",
            ["data.hard_negatives=[relation,attribute,noun]", "objective.hard_negative_images=32"],
            {"train/contrastive", "train/hard_negative_images"},
        ),
    ],
)
def test_objective_trains_and_evaluates(objective, extra, loss_parts, tiny_overrides, tmp_path):
    cfg = build_config({}, tiny_overrides + FEW_STEPS + [f"objective={objective}", *extra])
    metrics = train(cfg, tmp_path / "run", quiet=True)
    for key in ("zeroshot/shape/top1", "retrieval/image_to_text/R@1", "compositional/relation/acc"):
        assert 0.0 <= metrics[key] <= 1.0
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in logged if "train/loss" in r][-1]
    assert loss_parts <= set(last) and np.isfinite(last["train/loss"])
    if objective == "clip":  # every caption either got a negative by some rule or was counted as having none
        counted = sum(v for k, v in metrics.items() if k.startswith("data/negatives/"))
        assert counted == 4 * cfg.train.batch_size and metrics.get("data/negatives/none", 0) > 0


def test_caption_command(tiny_overrides, tmp_path):
    cfg = build_config({}, tiny_overrides + FEW_STEPS + ["objective=cap", eval_tasks(zeroshot=None)])
    train(cfg, tmp_path / "run", quiet=True)
    world = World(32)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(world.sample("test", i)[0]).save(paths[-1])
    out = tmp_path / "captions.tsv"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vislang.cli",
            "caption",
            str(tmp_path / "run"),
            *map(str, paths),
            "--method",
            "beam",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = out.read_text().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(p) for p in paths]
    result = subprocess.run(
        [sys.executable, "-m", "vislang.cli", "caption", str(tmp_path / "run"), str(tmp_path / "nope.png")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr and "nope.png" in result.stderr
