"""timm image towers: any timm model by name as the image tower of the one training loop, its
weights from a local file only, timm's patch dropout for FLIP, and LiT locking with frozen
BatchNorm statistics."""

from __future__ import annotations

import pytest
import torch

from vislang.config import ModelConfig, VisionConfig
from vislang.errors import ConfigError
from vislang.experiment import build_config, build_objective
from vislang.models.vision.timm_tower import TimmTower
from vislang.objectives.towers import build_vision
from vislang.train.loop import train

timm = pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")


def _config(vision: dict):
    """The shared tiny config with a timm image tower (32 px, 3 steps)."""
    from conftest import TINY

    raw = {"model": {"vision": {"kind": "timm", **vision}}}
    keep = [o for o in TINY if not o.startswith("model.vision.") or o.startswith("model.vision.image_size")]
    return build_config(raw, keep + ["train.steps=3", "train.checkpoint_every=3", "train.eval_every=3"], source="test")


@pytest.mark.parametrize(
    ("name", "pool"), [("convnext_atto", "mean"), ("resnet18", "mean"), ("efficientnet_b0", "mean")]
)
def test_timm_towers_embed(name, pool):
    cfg = _config({"timm_model": name, "pool": pool})
    model = build_objective(cfg, 64, 0).model
    images = torch.randn(2, 3, 32, 32)
    assert model.encode_image(images).shape == (2, cfg.model.embed_dim)
    assert model.vision.tokens(images).ndim == 3


def test_timm_tower_trains_on_the_world(tmp_path):
    cfg = _config({"timm_model": "convnext_atto"})
    metrics = train(cfg, tmp_path / "run", quiet=True)
    assert "zeroshot/shape/top1" in metrics and "retrieval/text_to_image/R@1" in metrics
    from vislang.api import load_objective

    trained, _, _ = load_objective(tmp_path / "run")
    torch.manual_seed(cfg.train.seed)  # the loop builds the model right after this seed
    fresh = build_objective(cfg, trained.model.text.token_embed.num_embeddings, 0)
    trunk = [k for k, v in fresh.model.vision.trunk.state_dict().items() if v.is_floating_point()]
    changed = [k for k in trunk if not torch.equal(fresh.model.vision.trunk.state_dict()[k],
                                                   trained.model.vision.trunk.state_dict()[k])]  # fmt: skip
    assert len(changed) > len(trunk) // 2  # the timm trunk was trained


def test_timm_weights_come_from_a_local_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(3)
    source = timm.create_model("resnet18")  # with its classifier, as timm's releases are stored
    safetensors_torch.save_file(source.state_dict(), str(tmp_path / "resnet18.safetensors"))
    cfg = _config({"timm_model": "resnet18", "timm_pretrained": str(tmp_path / "resnet18.safetensors")})
    trunk = build_objective(cfg, 64, 0).model.vision.trunk
    for key, value in trunk.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key
    with pytest.raises(ConfigError, match="not found"):
        build_objective(_config({"timm_model": "resnet18", "timm_pretrained": str(tmp_path / "nope.pt")}), 64, 0)


def test_timm_tower_from_plain_arguments_and_only_for_two_tower_objectives():
    tower = TimmTower("resnet18", 16, pool="mean")
    assert tower(torch.randn(2, 3, 32, 32)).shape == (2, 16) and tower.width == 512
    with pytest.raises(ConfigError, match="two-tower objectives"):  # captioners and CoCa read ViT tokens
        build_vision(ModelConfig(vision=VisionConfig(kind="timm", timm_model="resnet18")), None)


def test_timm_config_errors():
    with pytest.raises(ConfigError, match="timm_model"):
        _config({})
    with pytest.raises(ConfigError, match="not_a_model"):
        build_objective(_config({"timm_model": "not_a_model"}), 64, 0)
    with pytest.raises(ConfigError, match="kind timm"):
        build_config({"model": {"vision": {"timm_model": "resnet18"}}}, [], source="test")


def test_timm_patch_dropout_is_flip_masking():
    cfg = _config({"timm_model": "vit_tiny_patch16_224", "timm_kwargs": {"img_size": 32}, "pool": "cls",
                   "mask_ratio": 0.5})  # fmt: skip
    from vislang.models.vision.vit import set_mask_ratio

    model = build_objective(cfg, 64, 0).model
    images = torch.randn(2, 3, 32, 32)
    model.train()
    assert model.vision.tokens(images).shape[1] == 1 + 2  # class token + half of the 4 patches
    model.eval()
    assert model.vision.tokens(images).shape[1] == 1 + 4  # never masked in evaluation
    model.train()
    set_mask_ratio(model, 0.0)  # unmasked tuning
    assert model.vision.tokens(images).shape[1] == 1 + 4


def test_locked_timm_tower_keeps_weights_and_batchnorm_statistics(tmp_path):
    cfg = _config({"timm_model": "resnet18", "lock": True})
    train(cfg, tmp_path / "run", quiet=True)
    from vislang.api import load_objective

    trained, _, _ = load_objective(tmp_path / "run")
    torch.manual_seed(cfg.train.seed)
    fresh = build_objective(cfg, trained.model.text.token_embed.num_embeddings, 0)
    assert any("running_mean" in k for k in fresh.model.vision.state_dict())
    for key, value in fresh.model.vision.state_dict().items():
        assert torch.equal(value, trained.model.vision.state_dict()[key]), key
