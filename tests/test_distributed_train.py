"""``vislang train`` under torchrun with 2 CPU processes (gloo): it completes, writes one run
directory from rank 0, resumes, and trains the same weights as one process on the global batch
(each rank takes its half of every batch; losses gather features across ranks; DDP averages),
also with exact micro-batch accumulation and with FSDP2. (A single process at the per-rank batch ends ~1e-2
away from these weights; the two-process run ~1e-6.)"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import torch
import yaml

from vislang.checkpoint import load_checkpoint
from vislang.experiment import build_config
from vislang.train.loop import train

DIFFERENT = [
    "model.vision.stem=patch",  # BatchNorm would see each rank's half only
    "train.steps=4",
    "train.checkpoint_every=2",
    "train.eval_every=4",
    "eval.tasks=[{type: zeroshot, n: 40}, {type: retrieval, n: 41}]",  # 41: the ranks' shares differ in size
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(config, out, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    command += ["-m", "vislang.cli", "train", str(config), "--out", str(out), "--quiet", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=400, env=env)


def test_two_processes_train_resume_and_match_one_process(tmp_path, tiny_overrides):
    per_rank = build_config({}, tiny_overrides + DIFFERENT + ["train.batch_size=8"])
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(per_rank.model_dump(mode="json")))

    result = torchrun(config, tmp_path / "two")
    assert result.returncode == 0, result.stderr[-3000:]
    log = (tmp_path / "two" / "log.txt").read_text()
    assert "x 2 ranks" in log and "batch 8 per rank (16 in all)" in log
    assert result.stdout.count("report:") == 1  # rank 0 alone reports

    one = build_config({}, tiny_overrides + DIFFERENT + ["train.batch_size=16"])
    train(one, tmp_path / "one", quiet=True)
    two = load_checkpoint(tmp_path / "two" / "checkpoints" / "step_00000004.pt")
    single = load_checkpoint(tmp_path / "one" / "checkpoints" / "step_00000004.pt")
    for name, tensor in single["model"].items():
        assert torch.allclose(two["model"][name], tensor, rtol=1e-4, atol=1e-5), name
    assert two["data"]["counts"] == single["data"]["counts"]
    # evaluation sharded over the ranks gives the metrics of one process (up to one item of one
    # task flipping: the weights agree to ~1e-6, not bit for bit)
    two_metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    one_metrics = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert two_metrics.keys() == one_metrics.keys()
    differ = [k for k in one_metrics if abs(two_metrics[k] - one_metrics[k]) > 1e-9]
    assert len(differ) <= 1 and all(abs(two_metrics[k] - one_metrics[k]) <= 0.05 for k in differ), differ

    # exact accumulation (GradCache) under DDP averages the gradients itself: still the same weights
    result = torchrun(config, tmp_path / "two_accum", "--set", "train.accum_steps=3")
    assert result.returncode == 0, result.stderr[-3000:]
    accumulated = load_checkpoint(tmp_path / "two_accum" / "checkpoints" / "step_00000004.pt")
    for name, tensor in single["model"].items():
        assert torch.allclose(accumulated["model"][name], tensor, rtol=1e-4, atol=1e-5), name

    # a locked image tower (LiT) under DDP: frozen parameters are no unused-parameter error
    result = torchrun(config, tmp_path / "lit", "--set", "model.vision.lock=true")
    assert result.returncode == 0, result.stderr[-3000:]
    lit = load_checkpoint(tmp_path / "lit" / "checkpoints" / "step_00000004.pt")["model"]
    first = load_checkpoint(tmp_path / "lit" / "checkpoints" / "step_00000002.pt")["model"]
    assert all(torch.equal(lit[k], first[k]) for k in lit if k.startswith("model.vision."))
    assert not all(torch.equal(lit[k], first[k]) for k in lit if k.startswith("model.text."))

    # FSDP2 (blocks sharded, the rest replicated): the same weights again, and it resumes
    result = torchrun(config, tmp_path / "fsdp", "--set", "train.fsdp=true")
    assert result.returncode == 0, result.stderr[-3000:]
    sharded = load_checkpoint(tmp_path / "fsdp" / "checkpoints" / "step_00000004.pt")
    assert "FSDP" in (tmp_path / "fsdp" / "log.txt").read_text()
    for name, tensor in single["model"].items():
        assert torch.allclose(sharded["model"][name], tensor, rtol=1e-4, atol=1e-5), name
    (tmp_path / "fsdp" / "checkpoints" / "step_00000004.pt").unlink()
    result = torchrun(config, tmp_path / "fsdp", "--set", "train.fsdp=true", "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = load_checkpoint(tmp_path / "fsdp" / "checkpoints" / "step_00000004.pt")
    for name, tensor in sharded["model"].items():
        assert torch.allclose(resumed["model"][name], tensor, rtol=1e-6, atol=1e-7), name

    # kill the run after step 2 (drop its last checkpoint) and resume under torchrun
    (tmp_path / "two" / "checkpoints" / "step_00000004.pt").unlink()
    result = torchrun(config, tmp_path / "two", "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = load_checkpoint(tmp_path / "two" / "checkpoints" / "step_00000004.pt")
    for name, tensor in two["model"].items():
        assert torch.allclose(resumed["model"][name], tensor, rtol=1e-6, atol=1e-7), name
