"""Position-embedding resizing: the grid and sequence math against formulas written out here, the
towers' own declarations (ViT learned and sincos2d, timm ViT, text transformer), a start trained
at another size through init_from, and loading a saved model at another image size."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import TINY
from vislang.api import load, load_objective
from vislang.checkpoint import load_checkpoint
from vislang.errors import ConfigError
from vislang.experiment import build_config
from vislang.models.positions import adapt_positions, resize_grid, resize_sequence
from vislang.models.text.transformer import TextTransformer
from vislang.models.vision.vit import VisionTransformer, sincos_2d
from vislang.train.init_from import init_tower_from
from vislang.train.loop import train


def _grid_by_hand(pos: torch.Tensor, prefix: int, new: int) -> torch.Tensor:
    """The reference: the cells laid out as a [1, D, g, g] image, F.interpolate, laid back out."""
    g = int(round((pos.shape[1] - prefix) ** 0.5))
    cells = pos[0, prefix:].reshape(g, g, -1).permute(2, 0, 1)[None]
    out = F.interpolate(cells, size=(new, new), mode="bicubic", align_corners=False)[0]
    return torch.cat([pos[:, :prefix], out.permute(1, 2, 0).reshape(1, new * new, -1)], dim=1)


@pytest.mark.parametrize("prefix", [0, 1])
@pytest.mark.parametrize("new", [6, 3])
def test_grid_resize_is_bicubic_on_the_grid_with_the_class_row_kept(prefix, new):
    pos = torch.randn(1, prefix + 16, 8, generator=torch.Generator().manual_seed(0))
    out = resize_grid(pos, new, prefix)
    assert out.shape == (1, prefix + new * new, 8)
    torch.testing.assert_close(out, _grid_by_hand(pos, prefix, new))
    if prefix:
        assert torch.equal(out[:, 0], pos[:, 0])
    # the row-major layout: cell (r, c) of the grid is token prefix + r * g + c; a constant row stays constant
    ramp = torch.arange(4.0).repeat_interleave(4)[None, :, None].expand(1, 16, 2)  # value = row index
    rows = resize_grid(ramp, 8)[0, :, 0].reshape(8, 8)
    assert torch.allclose(rows, rows[:, :1].expand(8, 8))
    assert (rows[1:, 0] >= rows[:-1, 0]).all()


def test_grid_resize_refuses_a_non_square_grid():
    with pytest.raises(ValueError, match="square"):
        resize_grid(torch.zeros(1, 15, 4), 4)


def test_sequence_resize_truncates_and_interpolates_linearly():
    pos = torch.randn(1, 6, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(resize_sequence(pos, 4), pos[:, :4])
    out = resize_sequence(pos, 10)
    # align_corners=False: output position i samples the input at (i + 0.5) * 6 / 10 - 0.5, clamped at the ends
    x = (np.arange(10) + 0.5) * 6 / 10 - 0.5
    expected = np.stack([np.interp(x, np.arange(6), pos[0, :, d].numpy()) for d in range(3)], axis=1)
    np.testing.assert_allclose(out[0].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert resize_sequence(pos[0], 4).shape == (4, 3)


def test_vit_declares_its_positions_and_keeps_its_parameter():
    small, big = (
        VisionTransformer(16, image_size=32, patch_size=8, pool="cls"),
        VisionTransformer(16, image_size=48, patch_size=8, pool="cls"),
    )
    state = small.state_dict()
    lines = adapt_positions(big, state)
    assert lines == ["pos_embed: positions interpolated from a 4x4 to a 6x6 grid"]
    torch.testing.assert_close(state["pos_embed"], _grid_by_hand(small.pos_embed.detach(), 1, 6))
    big.load_state_dict(state)
    param, before = small.pos_embed, small.pos_embed.detach().clone()
    assert small.set_image_size(48) == ["image positions interpolated from a 4x4 to a 6x6 grid (48 px)"]
    assert small.pos_embed is param and torch.equal(param.detach(), _grid_by_hand(before, 1, 6))
    small.eval()
    assert small(torch.randn(2, 3, 48, 48)).shape == (2, 16)
    assert small.set_image_size(48) == []
    with pytest.raises(ValueError, match="multiple of the patch size"):
        small.set_image_size(50)


def test_sincos_positions_are_recomputed_for_the_new_grid():
    vit = VisionTransformer(16, image_size=32, patch_size=8, width=32, pool="cls", pos_embed="sincos2d")
    vit.set_image_size(64)
    assert torch.equal(vit.pos_embed[:, 1:], sincos_2d(8, 32)) and torch.equal(
        vit.pos_embed[:, :1], torch.zeros(1, 1, 32)
    )
    assert adapt_positions(vit, {}) == []  # nothing of it is saved


def test_text_tower_truncates_or_interpolates_its_positions():
    short = TextTransformer(50, 8, context_length=8, width=16, depth=1)
    state = short.state_dict()
    long = TextTransformer(50, 8, context_length=12, width=16, depth=1)
    assert adapt_positions(long, state) == ["pos_embed: text positions interpolated from 8 to 12"]
    torch.testing.assert_close(state["pos_embed"], resize_sequence(short.pos_embed.detach(), 12))
    param = long.pos_embed
    assert long.set_context_length(5) == ["text positions truncated from 12 to 5"]
    assert long.pos_embed is param and long.pos_embed.shape == (1, 5, 16) and long.causal_mask.shape == (5, 5)
    long.eval()
    assert long(torch.randint(1, 50, (2, 5))).shape == (2, 8)


def test_timm_vit_resizes_with_timms_own_resampling():
    pytest.importorskip("timm")
    from timm.layers import resample_abs_pos_embed

    from vislang.models.vision.timm_tower import TimmTower

    kwargs = {"img_size": 32, "patch_size": 8, "depth": 1, "embed_dim": 48, "num_heads": 2}
    tower = TimmTower("vit_tiny_patch16_224", 16, timm_kwargs=kwargs, pool="cls")
    state = tower.state_dict()
    param = tower.trunk.pos_embed
    assert tower.set_image_size(48) and tower.trunk.pos_embed is param
    expected = resample_abs_pos_embed(state["trunk.pos_embed"], new_size=[6, 6], num_prefix_tokens=1)
    torch.testing.assert_close(param.detach(), expected)
    assert adapt_positions(tower, state) and state["trunk.pos_embed"].shape == (1, 37, 48)
    assert tower.eval()(torch.randn(1, 3, 48, 48)).shape == (1, 16)
    assert TimmTower("convnext_atto", 16).set_image_size(48) == []  # no position table: any size


@pytest.fixture(scope="module")
def run32(tmp_path_factory):
    """A tiny CLIP run at 32 px with a class token (two steps)."""
    run = tmp_path_factory.mktemp("run32") / "run"
    cfg = build_config({}, TINY + ["train.steps=2", "eval.tasks=[]", "model.vision.pool=cls"])
    train(cfg, run, quiet=True)
    return run, TINY


def test_a_tower_starts_from_weights_of_another_image_size(run32):
    run, _ = run32
    saved = load_checkpoint(run)["model"]
    tower = VisionTransformer(32, image_size=48, patch_size=8, width=32, depth=1, heads=2, pool="cls")
    notes: list[str] = []
    copied, fresh = init_tower_from(tower, run, "model.vision.", notes)
    assert fresh == [] and copied == len(tower.state_dict())
    assert notes == ["model.vision.pos_embed: positions interpolated from a 4x4 to a 6x6 grid"]
    old = saved["model.vision.pos_embed"]
    torch.testing.assert_close(tower.pos_embed.detach(), _grid_by_hand(old, 1, 6))
    assert torch.equal(tower.pos_embed[:, 0], old[:, 0])  # the class token's row
    assert torch.equal(tower.proj.weight, saved["model.vision.proj.weight"])


def test_a_fine_tune_at_a_higher_resolution_starts_from_the_interpolated_model(run32, tmp_path):
    run, tiny = run32
    cfg = build_config({}, tiny + ["model.vision.image_size=48", "model.vision.pool=cls", "train.steps=1",
                                   "eval.tasks=[]", f"train.init_from={run}"])  # fmt: skip
    train(cfg, tmp_path / "ft", quiet=True)
    log = (tmp_path / "ft" / "log.txt").read_text()
    assert "model.vision.pos_embed: positions interpolated from a 4x4 to a 6x6 grid" in log


def test_a_saved_model_opens_at_another_image_size(run32, tmp_path):
    run, _ = run32
    saved = load_checkpoint(run)["model"]["model.vision.pos_embed"]
    model, _, preprocess = load(run, image_size=48)
    torch.testing.assert_close(model.vision.pos_embed.detach(), _grid_by_hand(saved, 1, 6))
    image = preprocess(Image.new("RGB", (100, 80), "red"))
    assert image.shape == (3, 48, 48) and model.encode_image(image[None]).shape[0] == 1
    assert load_objective(run, image_size=48)[2].model.vision.image_size == 48
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        load_objective(run, image_size=50)
    done = subprocess.run(
        [sys.executable, "-m", "vislang.cli", "eval", str(run), "--image-size", "48", "--quiet",
         "--set", "eval.tasks=[{type: zeroshot, n: 20}]"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "positions interpolated from a 4x4 to a 6x6 grid (48 px)" in done.stderr
    assert "zeroshot/shape/top1" in done.stdout
