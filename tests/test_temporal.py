"""Temporal pooling of frame features: shapes, order (attention sees it, the mean cannot), and
the two-tower model encoding [B, T, 3, H, W] clips through any image tower."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vislang.config import ModelConfig
from vislang.errors import ConfigError
from vislang.experiment import build_config
from vislang.models.temporal import MeanPool, TemporalAttention, build_temporal, encode_clips
from vislang.objectives.towers import build_two_tower

TINY_VISION = {"image_size": 16, "patch_size": 8, "width": 16, "depth": 1, "heads": 2}


def model(temporal: str) -> torch.nn.Module:
    config = ModelConfig(embed_dim=16, vision=TINY_VISION | {"temporal": temporal, "max_frames": 8},
                         text={"width": 16, "depth": 1, "heads": 2})  # fmt: skip
    return build_two_tower(config, vocab_size=50, pad_id=0).eval()


def test_pooling_shapes_and_the_frame_limit():
    torch.manual_seed(0)
    frames = torch.randn(3, 5, 16)
    assert MeanPool()(frames).shape == (3, 16)
    attention = TemporalAttention(16, max_frames=5, depth=2, heads=2)
    assert attention(frames).shape == (3, 16)
    assert attention(frames[:, :2]).shape == (3, 16)  # shorter clips use the first positions
    with pytest.raises(ValueError, match="max_frames"):
        attention(torch.randn(3, 6, 16))
    assert build_temporal("none", 16, 4, 1, 2, "auto") is None


def test_attention_tells_frame_order_and_the_mean_does_not():
    torch.manual_seed(0)
    frames = torch.randn(4, 6, 16)
    reverse = frames.flip(1)
    assert torch.allclose(MeanPool()(frames), MeanPool()(reverse), atol=1e-6)
    attention = TemporalAttention(16, max_frames=8).eval()
    gap = (attention(frames) - attention(reverse)).abs().max().item()
    assert gap > 1e-3
    # what tells order is the position embedding and the change embedding: without both it is blind
    with torch.no_grad():
        attention.positions.zero_()
    assert (attention(frames) - attention(reverse)).abs().max().item() > 1e-3
    with torch.no_grad():
        attention.motion.weight.zero_()
        attention.motion.bias.zero_()
    assert torch.allclose(attention(frames), attention(reverse), atol=1e-5)


def test_a_clip_of_one_repeated_image_encodes_as_the_image_under_mean_pooling():
    torch.manual_seed(0)
    net = model("mean")
    image = torch.randn(2, 3, 16, 16)
    clip = image[:, None].expand(2, 4, 3, 16, 16)
    assert torch.allclose(net.encode_image(clip), net.encode_image(image), atol=1e-5)
    frames = torch.randn(2, 4, 3, 16, 16)
    expected = F.normalize(net.vision(frames.flatten(0, 1)).view(2, 4, -1).mean(1), dim=-1)
    assert torch.allclose(net.encode_image(frames), expected, atol=1e-5)


def test_encode_image_takes_5d_clips_with_temporal_pooling_only():
    torch.manual_seed(0)
    clips = torch.randn(2, 3, 3, 16, 16)
    attention = model("attention")
    out = attention.encode_image(clips)
    assert out.shape == (2, 16)
    assert torch.allclose(out.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(out, attention.encode_image(clips.flip(1)), atol=1e-4)
    still = model("none")
    assert still.encode_image(clips[:, 0]).shape == (2, 16)
    assert not any(name.startswith("temporal.") for name in still.state_dict())  # checkpoints as before
    with pytest.raises(ValueError, match="temporal"):
        still.encode_image(clips)
    with pytest.raises(ValueError):
        encode_clips(still.vision, None, clips)


def test_gradients_reach_the_temporal_positions():
    net = model("attention").train()
    loss = net.encode_image(torch.randn(2, 4, 3, 16, 16)).sum()
    loss.backward()
    assert net.temporal.positions.grad is not None and net.temporal.positions.grad.abs().sum() > 0


def test_temporal_heads_must_divide_the_embedding():
    with pytest.raises(ConfigError, match="temporal_heads"):
        build_config({}, ["model.vision.temporal=attention", "model.vision.temporal_heads=5"])
    with pytest.raises(ConfigError):
        build_config({}, ["model.vision.temporal=sideways"])
