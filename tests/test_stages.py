"""Training stages (``train.stages``): validation, the mask and size of each step, the switch in
the loop (positions interpolated in place, data at the new size), exact resume on either side of
a boundary, and a staged run through the command line."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch

from conftest import TINY
from vislang.api import load_objective
from vislang.checkpoint import checkpoint_path, list_checkpoints, load_checkpoint
from vislang.config.train import stage_values
from vislang.errors import ConfigError
from vislang.experiment import build_config
from vislang.models.positions import resize_grid
from vislang.restore import as_trained
from vislang.train.loop import mask_at, train

STAGES = "train.stages=[{start_step: 6, image_size: 48}, {start_step: 9, mask_ratio: 0}]"
STAGED = [*TINY, "train.steps=12", "train.checkpoint_every=2", "train.keep_checkpoints=10", "eval.tasks=[]",
          "model.vision.mask_ratio=0.5", STAGES]  # fmt: skip


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ("[{start_step: 6, image_size: 48}, {start_step: 6, mask_ratio: 0}]", "stages.1.start_step 6 does not follow"),
        ("[{start_step: 12, image_size: 48}]", "stages.0.start_step 12 is not before train.steps"),
        ("[{start_step: 3}]", "changes nothing"),
        ("[{start_step: 0, image_size: 48}]", "train.stages.0.start_step"),
        ("[{start_step: 3, size: 48}]", "unknown config key 'train.stages.0.size'"),
    ],
)
def test_bad_stages_are_one_line_naming_the_key(stages, message):
    with pytest.raises(ConfigError, match=message) as error:
        build_config({}, [*TINY, f"train.stages={stages}"])
    assert "\n" not in str(error.value)


def test_unmasked_tuning_and_a_stage_mask_are_not_combined():
    with pytest.raises(ConfigError, match="unmasked_tuning and a stage's mask_ratio"):
        build_config({}, [*TINY, "train.unmasked_tuning=0.2", "train.stages=[{start_step: 3, mask_ratio: 0}]"])
    with pytest.raises(ConfigError, match="do not combine with train.ema_decay"):
        build_config({}, [*TINY, "train.ema_decay=0.9", "train.stages=[{start_step: 3, image_size: 48}]"])


def test_an_image_size_the_patches_do_not_divide_is_refused_before_training(tmp_path):
    cfg = build_config({}, [*TINY, "train.stages=[{start_step: 3, image_size: 50}]"])
    with pytest.raises(ConfigError, match="train.stages.0: image_size 50 is not a multiple of patch_size 8"):
        train(cfg, tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["objective=coca", "train.stages=[{start_step: 3, context_length: 32}]"], "stages.0.context_length: the coca"),
        (["objective=cap", "train.stages=[{start_step: 3, context_length: 32}]"], "stages.0.context_length: the cap"),
        (["objective=mae", "eval.tasks=[]", "train.stages=[{start_step: 3, image_size: 48}]"], "image_size: the mae"),
        (["objective.hard_negative_images=8", "train.stages=[{start_step: 3, image_size: 48}]"], "keeps a bank"),
        (["data.cit={class_names: [circle]}", "train.stages=[{start_step: 3, context_length: 32}]"], "data.cit"),
    ],
)
def test_stages_that_a_part_of_the_objective_cannot_follow_are_refused(sets, message, tmp_path):
    """Parts sized once by the first inputs (a decoder's positions, MAE's pixel decoder, the
    hard-negative bank, CiT's prompts) would break at the switch: refused before anything is written."""
    cfg = build_config({}, [*TINY, *sets])
    with pytest.raises(ConfigError, match=message):
        train(cfg, tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_each_step_gets_its_stage_values():
    cfg = build_config({}, STAGED)
    assert stage_values(cfg.train.stages, 5) == {}
    assert stage_values(cfg.train.stages, 6) == {"image_size": 48}
    assert stage_values(cfg.train.stages, 9) == {"image_size": 48, "mask_ratio": 0.0}  # later stages add up
    assert [mask_at(cfg, s) for s in range(12)] == [0.5] * 9 + [0.0] * 3
    # a checkpoint of step s holds the model that trained step s (begun after s - 1 steps)
    assert [as_trained(cfg, s).model.vision.image_size for s in (6, 7, 12)] == [32, 48, 48]
    assert as_trained(cfg, 7).train.stages == []
    unmasked = build_config({}, [*TINY, "model.vision.mask_ratio=0.5", "train.unmasked_tuning=0.25"])
    assert [mask_at(unmasked, s) for s in range(12)] == [0.5] * 9 + [0.0] * 3  # the same schedule, the old way


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The staged run trained straight through its boundaries."""
    run = tmp_path_factory.mktemp("stages") / "straight"
    train(build_config({}, STAGED), run, quiet=True)
    return run


def test_the_switch_interpolates_the_trained_positions(straight):
    before, after = load_checkpoint(checkpoint_path(straight / "checkpoints", 6)), None
    after = load_checkpoint(checkpoint_path(straight / "checkpoints", 8))
    assert before["model"]["model.vision.pos_embed"].shape == (1, 16, 32)
    assert after["model"]["model.vision.pos_embed"].shape == (1, 36, 32)
    log = (straight / "log.txt").read_text()
    assert "step 6: stage of 48 px, context length 24: image positions interpolated from a 4x4 to a 6x6 grid" in log
    objective, _, cfg = load_objective(straight)
    assert cfg.model.vision.image_size == 48 and objective.model.vision.grid == 6
    objective.eval()
    assert objective.model.encode_image(torch.zeros(1, 3, 48, 48)).shape == (1, 32)


@pytest.mark.parametrize("stopped_at", [4, 6, 8])
def test_resume_is_exact_across_a_stage_boundary(straight, tmp_path, stopped_at):
    run = tmp_path / "resumed"
    shutil.copytree(straight, run, ignore=shutil.ignore_patterns(".lock"))
    for path in list_checkpoints(run / "checkpoints"):
        if load_checkpoint(path)["step"] > stopped_at:
            path.unlink()
    # the positions at the stop are the pre-switch 4x4 grid (4, 6) or the interpolated 6x6 one (8)
    grid = load_checkpoint(run)["model"]["model.vision.pos_embed"].shape[1]
    assert grid == (16 if stopped_at <= 6 else 36)
    train(build_config({}, STAGED), run, resume=True, quiet=True)
    resumed, expected = load_checkpoint(run), load_checkpoint(straight)
    assert resumed["step"] == expected["step"] == 12
    for name, tensor in expected["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name
    for key, state in expected["optimizer"]["state"].items():
        for field, value in state.items():
            assert torch.equal(resumed["optimizer"]["state"][key][field], value), (key, field)


def test_interpolation_of_the_switch_matches_the_grid_formula(straight, tmp_path):
    """Stopped at the boundary and switched by hand: the same positions as the loop's switch."""
    saved = load_checkpoint(checkpoint_path(straight / "checkpoints", 6))["model"]["model.vision.pos_embed"]
    objective, _, _ = load_objective(checkpoint_path(straight / "checkpoints", 6), image_size=48)
    torch.testing.assert_close(objective.model.vision.pos_embed.detach(), resize_grid(saved, 6))


def test_a_staged_run_through_the_command_line(tmp_path):
    config = tmp_path / "staged.yaml"
    config.write_text(
        "objective: clip\ntrain:\n  stages: [{start_step: 3, image_size: 48}, {start_step: 4, context_length: 16}]\n"
    )
    sets = [a for o in [*TINY, "train.steps=6", "eval.tasks=[{type: zeroshot, n: 20}]"] for a in ("--set", o)]
    done = subprocess.run(
        [sys.executable, "-m", "vislang.cli", "train", str(config), "--out", str(tmp_path / "run"), "--quiet", *sets],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "step 3: stage of 48 px" in log and "text positions truncated from 24 to 16" in log
    state = load_checkpoint(tmp_path / "run")["model"]
    assert state["model.vision.pos_embed"].shape == (1, 36, 32) and state["model.text.pos_embed"].shape == (1, 16, 32)
    assert "zeroshot/shape/top1" in (tmp_path / "run" / "metrics.json").read_text()
