"""MAE: per-sample masking, the loss on hidden patches only, and its encoder as a later image tower."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TINY
from vislang.checkpoint import read_model
from vislang.experiment import build_config, build_objective
from vislang.models.vision.mae import MaeDecoder, MaskedAutoencoder, patchify, random_keep
from vislang.models.vision.vit import VisionTransformer
from vislang.objectives.mae import masked_patch_loss
from vislang.train.init_from import init_tower_from
from vislang.train.loop import train

FEW_STEPS = ["train.steps=3", "train.eval_every=3", "train.checkpoint_every=3", "eval.tasks=[]"]


@pytest.fixture(scope="module")
def mae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mae")
    train(build_config({}, TINY + FEW_STEPS + ["objective=mae", "objective.decoder.width=16"]), out, quiet=True)
    return out


def tiny_mae(pool: str = "mean") -> MaskedAutoencoder:
    vision = VisionTransformer(None, image_size=24, patch_size=4, width=16, depth=1, heads=2, stem="patch", pool=pool)
    return MaskedAutoencoder(vision, MaeDecoder(16, vision.grid, 3 * 16, width=8, depth=1, heads=2))


def test_masking_keeps_the_share_per_sample():
    keep_index, mask = random_keep(7, 36, 9, generator=torch.Generator().manual_seed(0))
    assert keep_index.shape == (7, 9) and (mask.sum(dim=1) == 27).all()
    for row in range(7):
        kept = keep_index[row].tolist()
        assert kept == sorted(set(kept))  # distinct, in grid order
        assert set(np.flatnonzero(mask[row].numpy() == 0)) == set(kept)
    assert len({tuple(r) for r in keep_index.tolist()}) > 1  # each sample draws its own patches
    model = tiny_mae()
    pred, target, mask = model(torch.randn(5, 3, 24, 24), 0.75)
    assert pred.shape == target.shape == (5, 36, 48) and (mask.sum(dim=1) == 27).all()


def test_patchify_matches_slicing():
    images = torch.randn(2, 3, 8, 12)
    patches = patchify(images, 4).numpy()
    x = images.numpy()
    for b in range(2):
        for r in range(2):
            for c in range(3):
                block = x[b, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4].transpose(1, 2, 0).reshape(-1)
                np.testing.assert_array_equal(patches[b, r * 3 + c], block)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_loss_counts_hidden_patches_only(norm_pix):
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(3, 10, 12, generator=g), torch.randn(3, 10, 12, generator=g)
    mask = (torch.rand(3, 10, generator=g) < 0.6).float()
    mask[:, 0] = 1.0
    p, t, m = pred.double().numpy(), target.double().numpy(), mask.numpy()
    errors = []
    for b in range(3):
        for n in range(10):
            if m[b, n]:
                goal = t[b, n]
                if norm_pix:
                    goal = (goal - goal.mean()) / np.sqrt(goal.var(ddof=1) + 1e-6)
                errors.append(np.mean((p[b, n] - goal) ** 2))
    loss = masked_patch_loss(pred, target, mask, norm_pix)
    assert loss.item() == pytest.approx(np.mean(errors), rel=1e-5)
    changed = pred.clone()
    changed[mask == 0] += 100.0  # predictions of visible patches do not count
    assert masked_patch_loss(changed, target, mask, norm_pix).item() == pytest.approx(loss.item(), rel=1e-6)


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_visible_tokens_with_every_patch_equal_the_full_pass(pool):
    model = tiny_mae(pool).eval()
    images = torch.randn(2, 3, 24, 24)
    everything = torch.arange(36).expand(2, -1)
    torch.testing.assert_close(model.vision.visible_tokens(images, everything), model.vision.tokens(images))
    some = torch.tensor([[0, 5, 7], [1, 2, 35]])
    assert model.vision.visible_tokens(images, some).shape == (2, 3 + (pool == "cls"), 16)


def test_mae_trains_and_its_encoder_starts_a_clip_image_tower(mae_run, tiny_overrides):
    logged = (mae_run / "metrics.jsonl").read_text()
    assert "train/reconstruction" in logged
    saved = read_model(mae_run)["model"]
    assert any(k.startswith("model.decoder.") for k in saved)
    cfg = build_config({}, tiny_overrides + ["objective=clip"])
    clip = build_objective(cfg, 300, 0)
    loaded, fresh = init_tower_from(clip.model.vision, mae_run, "model.vision.")
    state = clip.model.vision.state_dict()
    encoder = {k[len("model.vision.") :]: v for k, v in saved.items() if k.startswith("model.vision.")}
    assert loaded == len(encoder) and fresh == ["proj.weight"]
    for name, value in encoder.items():
        torch.testing.assert_close(state[name], value, rtol=0, atol=0)
