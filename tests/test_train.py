"""End-to-end training on the built-in world: the run directory, exact resume after SIGKILL,
divergence detection and protection of existing runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from vislang.checkpoint import list_checkpoints, load_checkpoint
from vislang.errors import ConfigError, TrainingDiverged
from vislang.experiment import build_config
from vislang.hardware import cpu_has_bf16_units
from vislang.train.loop import train


def test_tiny_run_leaves_a_complete_run_directory(tiny_config, tmp_path):
    metrics = train(tiny_config, tmp_path / "run", quiet=True)
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "metrics.json", "report.md", "tokenizer.json", "loss.png"):
        assert (run / name).exists(), name
    assert list((run / "tensorboard").iterdir())
    saved = json.loads((run / "metrics.json").read_text())
    assert saved == pytest.approx(metrics)
    for key in (
        "zeroshot/shape/top1",
        "zeroshot/color/top1",
        "retrieval/text_to_image/R@1",
        "retrieval/image_to_text/R@10",
        "compositional/relation/acc",
        "compositional/attribute/acc",
        "compositional/order/acc",
    ):
        assert 0.0 <= saved[key] <= 1.0, key
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "train/loss" in r]
    assert [r["step"] for r in logged] == [2, 4, 6, 8, 10, 12]
    for key in ("train/lr", "train/grad_norm", "train/logit_scale", "train/samples_per_s", "train/data_wait_s"):
        assert key in logged[-1]
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step_00000006.pt", "step_00000012.pt"]
    assert "bag of words" in (run / "report.md").read_text() or "above chance" in (run / "report.md").read_text()


def test_loss_decreases_on_the_world(tiny_overrides, tmp_path):
    cfg = build_config(
        {},
        tiny_overrides
        + [
            "train.steps=80",
            "train.lr=3e-3",
            "eval.tasks=[]",
        ],
    )
    train(cfg, tmp_path, quiet=True)
    losses = [json.loads(line)["train/loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3


def test_siglip_trains(tiny_overrides, tmp_path):
    cfg = build_config(
        {"objective": "siglip", "model": {"init_logit_scale": 10, "init_logit_bias": -10}},
        tiny_overrides + ["model.text.causal=false", "model.text.pool=last", "model.vision.pool=map"],
    )
    metrics = train(cfg, tmp_path, quiet=True)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    last_train = [r for r in records if "train/loss" in r][-1]
    assert last_train["train/logit_bias"] != -10.0 and "zeroshot/color/top1" in metrics


def test_nan_loss_stops_with_the_step(tiny_overrides, tmp_path):
    cfg = build_config({}, tiny_overrides + ["train.lr=1e30", "train.warmup_steps=1", "train.grad_clip=0"])
    with pytest.raises(TrainingDiverged, match=r"at step \d+"):
        train(cfg, tmp_path, quiet=True)


def test_existing_run_is_not_overwritten(tiny_config, tmp_path):
    train(tiny_config, tmp_path, quiet=True)
    with pytest.raises(ConfigError, match="--resume"):
        train(tiny_config, tmp_path, quiet=True)
    other = tiny_config.model_copy(update={"train": tiny_config.train.model_copy(update={"lr": 0.5})})
    with pytest.raises(ConfigError, match="config differs"):
        train(other, tmp_path, resume=True, quiet=True)


def test_fp16_needs_cuda(tiny_overrides, tmp_path):
    cfg = build_config({}, tiny_overrides + ["train.precision=fp16", "train.device=cpu"])
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        train(cfg, tmp_path, quiet=True)


def test_bf16_on_the_cpu_trains_and_says_when_it_is_emulated(tiny_overrides, tmp_path):
    cfg = build_config({}, tiny_overrides + ["train.precision=bf16", "train.steps=2", "train.eval_every=2"])
    metrics = train(cfg, tmp_path, quiet=True)
    assert 0 <= metrics["zeroshot/color/top1"] <= 1
    assert ("runs emulated" in (tmp_path / "log.txt").read_text()) == (cpu_has_bf16_units() is False)


def test_bf16_units_are_read_from_the_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    assert cpu_has_bf16_units(cpuinfo) is False
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n")
    assert cpu_has_bf16_units(cpuinfo) is True
    assert cpu_has_bf16_units(tmp_path / "absent") is None


@pytest.mark.slow
def test_compiled_training_runs(tiny_overrides, tmp_path):
    """torch.compile (Inductor builds C++ kernels on the CPU: about a minute on 2 cores)."""
    cfg = build_config({}, tiny_overrides + ["train.compile=true", "train.steps=4", "train.eval_every=4"])
    metrics = train(cfg, tmp_path, quiet=True)
    assert 0 <= metrics["zeroshot/color/top1"] <= 1
    assert "compiled" in (tmp_path / "log.txt").read_text()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vislang.cli", *args]


def test_sigkill_and_resume_equals_uninterrupted(tiny_overrides, tmp_path):
    steps = 60
    overrides = tiny_overrides + [
        f"train.steps={steps}",
        "train.checkpoint_every=5",
        "train.eval_every=1000",
        "data.num_workers=1",
        "model.vision.mask_ratio=0.5",
    ]
    sets = [arg for o in overrides for arg in ("--set", o)]
    config = tmp_path / "run.yaml"
    config.write_text("objective: clip\n")

    reference = build_config({"objective": "clip"}, overrides)
    train(reference, tmp_path / "uninterrupted", quiet=True)

    run = tmp_path / "killed"
    proc = subprocess.Popen(
        _cli("train", str(config), "--out", str(run), "--quiet", *sets),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoints" / "step_00000010.pt").exists():
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(run)["step"]
    assert 10 <= killed_at < steps, "the run was not killed mid-training"

    done = subprocess.run(
        _cli("train", str(config), "--out", str(run), "--resume", "--quiet", *sets),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    resumed = load_checkpoint(run)
    expected = load_checkpoint(tmp_path / "uninterrupted")
    assert resumed["step"] == expected["step"] == steps
    for name, tensor in expected["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps_logged = [r["step"] for r in records if "train/loss" in r]
    assert steps_logged == list(range(2, steps + 1, 2))  # one line per logged step, none lost or doubled


class _Payload:
    """Unpickling this would run ``touch`` (a file appearing proves the code ran)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_checkpoint_is_refused_without_running_its_code(tmp_path):
    from vislang.api import load
    from vislang.errors import CheckpointError

    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoints" / "step_00000001.pt"
    path.parent.mkdir()
    torch.save({"step": 1, "model": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    result = subprocess.run(_cli("eval", str(tmp_path)), capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "refused" in result.stderr and "weights_only=False" not in result.stderr
    assert "Traceback" not in result.stderr
    with pytest.raises(CheckpointError):
        load(tmp_path)
    assert not marker.exists()
