"""Nothing a run made is lost: one run per directory, checkpoints that survive SIGKILL at any
moment (and resume exactly), resume that refuses the wrong run, and a failing evaluation that
costs no training."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from vislang.checkpoint import CHECKPOINT_TEMP, list_checkpoints, load_checkpoint
from vislang.cli import main
from vislang.errors import ConfigError
from vislang.experiment import build_config, with_eval_overrides
from vislang.train.loop import train
from vislang.train.run_dir import RunDirLock


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vislang.cli", *args]


def _sets(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def _wait_for(predicate, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and not predicate():
        time.sleep(0.005)


def test_kill_loop_leaves_loadable_checkpoints_and_resumes_exactly(tiny_overrides, tmp_path):
    """SIGKILL at random moments while checkpoints are written every step: every checkpoint left
    loads, the next start removes the killed writer's temp files, and the resumed run ends with
    the weights of a run never interrupted."""
    steps = 30
    overrides = tiny_overrides + [f"train.steps={steps}", "train.checkpoint_every=1", "train.eval_every=1000",
                                  "train.keep_checkpoints=3", "data.num_workers=0", "eval.tasks=[]"]  # fmt: skip
    config = tmp_path / "run.yaml"
    config.write_text("objective: clip\n")
    train(build_config({"objective": "clip"}, overrides), tmp_path / "uninterrupted", quiet=True)
    run, rng, last = tmp_path / "killed", np.random.default_rng(0), 0
    for attempt in range(3):
        resume = ["--resume"] if attempt else []
        proc = subprocess.Popen(_cli("train", str(config), "--out", str(run), "--quiet", *resume, *_sets(overrides)),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        _wait_for(lambda last=last: any(int(p.stem[5:]) > last + 2 for p in list_checkpoints(run / "checkpoints")))
        time.sleep(float(rng.uniform(0, 0.08)))  # anywhere in a step, often inside a checkpoint write
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        left = list_checkpoints(run / "checkpoints")
        assert left, proc.stderr.read().decode()
        for path in left:  # each one whole, never half written
            assert load_checkpoint(path)["step"] == int(path.stem[5:])
        last = int(left[-1].stem[5:])
        assert last < steps, "the run finished before it was killed"
    stale = run / "checkpoints" / ".step_00000001.pt.tmp-4242"  # as a writer killed mid-write leaves it
    stale.write_bytes(b"partial")
    done = subprocess.run(_cli("train", str(config), "--out", str(run), "--quiet", "--resume", *_sets(overrides)),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not list((run / "checkpoints").glob(CHECKPOINT_TEMP))
    resumed, expected = load_checkpoint(run), load_checkpoint(tmp_path / "uninterrupted")
    assert resumed["step"] == expected["step"] == steps
    for name, tensor in expected["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name


def test_a_second_run_on_one_directory_refuses(tiny_overrides, tmp_path):
    overrides = tiny_overrides + ["train.steps=400", "train.checkpoint_every=2", "eval.tasks=[]"]
    config = tmp_path / "run.yaml"
    config.write_text("objective: clip\n")
    first = subprocess.Popen(_cli("train", str(config), "--out", str(tmp_path / "dup"), "--quiet", *_sets(overrides)),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        _wait_for(lambda: list_checkpoints(tmp_path / "dup" / "checkpoints"))
        second = subprocess.run(_cli("train", str(config), "--out", str(tmp_path / "dup"), "--quiet", "--resume",
                                     *_sets(overrides)), capture_output=True, text=True, timeout=120)  # fmt: skip
        assert second.returncode == 2
        assert second.stderr.count("\n") == 1 and "is in use by another run (pid" in second.stderr
        assert first.poll() is None  # the first run goes on
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    # the kernel released the killed run's lock: the directory can be taken at once
    RunDirLock(tmp_path / "dup").release()
    short = [o for o in overrides if not o.startswith("train.steps")] + ["train.steps=4"]
    args = ["train", str(config), "--out", str(tmp_path / "dup"), "--quiet", "--resume", *_sets(short)]
    assert main(args) == 2  # and a resume under another config is refused


def test_resume_checks_the_checkpoint_itself(tiny_overrides, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("objective: clip\n")
    base = tiny_overrides + ["train.steps=4", "train.checkpoint_every=2", "eval.tasks=[]"]
    run = str(tmp_path / "run")
    assert main(["train", str(config), "--out", run, "--quiet", "--resume", *_sets(base)]) == 2
    assert "holds no checkpoint to continue" in capsys.readouterr().err  # not a silent fresh start
    assert main(["train", str(config), "--resume", *_sets(base)]) == 2
    assert "--resume needs --out" in capsys.readouterr().err
    assert main(["train", str(config), "--out", run, "--quiet", *_sets(base)]) == 0
    capsys.readouterr()
    tokenizer = (tmp_path / "run" / "tokenizer.json").read_bytes()
    (tmp_path / "run" / "config.yaml").unlink()  # only the checkpoint's own config is left to compare
    other = base + ["model.embed_dim=48"]
    assert main(["train", str(config), "--out", run, "--quiet", "--resume", *_sets(other)]) == 2
    err = capsys.readouterr().err
    assert "differs from the run's checkpoint at model.embed_dim (saved 32, given 48)" in err
    assert err.count("\n") == 1 and (tmp_path / "run" / "tokenizer.json").read_bytes() == tokenizer


def test_an_empty_newest_checkpoint_falls_back_to_the_one_before(tiny_overrides, tmp_path):
    overrides = tiny_overrides + ["train.steps=6", "train.checkpoint_every=2", "eval.tasks=[]"]
    cfg = build_config({}, overrides)
    train(cfg, tmp_path / "whole", quiet=True)
    run = tmp_path / "run"
    train(cfg, run, quiet=True)
    newest = list_checkpoints(run / "checkpoints")[-1]
    newest.write_bytes(b"")  # a disk that lost the last write
    assert load_checkpoint(run)["step"] == 4
    train(cfg, run, resume=True, quiet=True)
    resumed, whole = load_checkpoint(run), load_checkpoint(tmp_path / "whole")
    assert resumed["step"] == whole["step"] == 6
    for name, tensor in whole["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name


def test_a_failing_evaluation_keeps_the_checkpoint_of_its_step(tiny_overrides, tmp_path, monkeypatch):
    from vislang.eval import zeroshot

    def broken(self, objective, features):
        raise RuntimeError("evaluator failed")

    monkeypatch.setattr(zeroshot.ZeroShotEvaluator, "__call__", broken)
    cfg = build_config({}, tiny_overrides + ["train.steps=6", "train.eval_every=3", "train.checkpoint_every=3"])
    with pytest.raises(RuntimeError, match="evaluator failed"):
        train(cfg, tmp_path / "run", quiet=True)
    assert load_checkpoint(tmp_path / "run")["step"] == 3  # saved before the evaluation of step 3
    monkeypatch.undo()
    train(cfg, tmp_path / "run", resume=True, quiet=True)
    assert load_checkpoint(tmp_path / "run")["step"] == 6


def test_eval_refuses_overrides_of_the_trained_model(tiny_overrides, tmp_path, capsys):
    cfg = build_config({}, tiny_overrides + ["train.steps=2", "train.eval_every=2", "train.checkpoint_every=2"])
    train(cfg, tmp_path / "run", quiet=True)
    assert main(["eval", str(tmp_path / "run"), "--set", "model.vision.width=32"]) == 2
    assert "only eval.* fields can change" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="model.vision.width"):
        with_eval_overrides(cfg, ["model.vision.width=32"], "run")


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch):
    import errno

    from vislang import checkpoint
    from vislang.errors import CheckpointError

    folder = tmp_path / "checkpoints"
    checkpoint.save_checkpoint({"model": {}, "config": {}, "step": 1}, folder, 1, keep=2)

    def full(state, handle):
        handle.write(b"x" * 1000)  # part of the file reached the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    with pytest.raises(CheckpointError) as info:
        checkpoint.save_checkpoint({"model": {}, "config": {}, "step": 2}, folder, 2, keep=2)
    assert "no space left on the device" in str(info.value) and "\n" not in str(info.value)
    assert [p.name for p in folder.iterdir()] == ["step_00000001.pt"]  # no .tmp file filling the disk


def test_the_lock_also_holds_within_one_process_and_names_a_bad_directory(tmp_path):
    held = RunDirLock(tmp_path / "run")
    with pytest.raises(ConfigError, match="in use by another run of this process"):
        RunDirLock(tmp_path / "run")
    held.release()
    RunDirLock(tmp_path / "run").release()
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ConfigError, match="cannot be used as a run directory"):
        RunDirLock(tmp_path / "file")
