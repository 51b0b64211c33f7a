"""Pooling of per-frame image features over time: a clip [B, T, D] -> one feature [B, D].

Why two kinds: the mean of the frame features is what a model that ignores time does (a
reversed clip gets exactly the features of the clip itself, up to float rounding), and
attention pooling is a small module that can see frame order: each frame's feature plus a
learned temporal position embedding and an embedding of its change from the frame before, a
few transformer blocks over the T frames, then attention pooling by one learned query. The
change embedding is there because a tower trained on captions learns features in which an
object's position is a faint component; the difference of consecutive frames isolates it
(as temporal-difference video models do), and without it the world's direction of motion was
measured far slower to learn. The image tower encodes every frame on its own, so any tower
works under both.
"""

from __future__ import annotations

import torch
from torch import nn

from vislang.models.layers import AttentionPool, Transformer


class MeanPool(nn.Module):
    """The mean of the frame features: blind to frame order by construction."""

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.mean(dim=1)


class TemporalAttention(nn.Module):
    """Frame features + learned temporal positions + the embedded change from the previous
    frame (zero for the first) -> ``depth`` pre-norm blocks -> attention pooling by a learned
    query -> LayerNorm."""

    def __init__(
        self,
        width: int,
        max_frames: int,
        depth: int = 1,
        heads: int = 2,
        mlp_ratio: float = 2.0,
        attn_impl: str = "auto",
    ) -> None:
        super().__init__()
        self.max_frames = max_frames
        self.positions = nn.Parameter(torch.randn(max_frames, width) * 0.02)
        self.motion = nn.Linear(width, width)  # embeds each frame's change from the frame before
        self.blocks = Transformer(width, depth, heads, mlp_ratio, attn_impl)
        self.pool = AttentionPool(width, heads, mlp_ratio, attn_impl=attn_impl)
        self.norm = nn.LayerNorm(width)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        t = frames.shape[1]
        if t > self.max_frames:
            raise ValueError(f"a clip of {t} frames is longer than max_frames {self.max_frames}")
        change = torch.cat([torch.zeros_like(frames[:, :1]), frames[:, 1:] - frames[:, :-1]], dim=1)
        x = self.blocks(frames + self.positions[:t].to(frames.dtype) + self.motion(change))
        return self.norm(self.pool(x))


def build_temporal(kind: str, width: int, max_frames: int, depth: int, heads: int, attn_impl: str) -> nn.Module | None:
    """The pooling ``kind`` names (``none``: None, the tower takes still images only)."""
    if kind == "none":
        return None
    if kind == "mean":
        return MeanPool()
    if kind == "attention":
        return TemporalAttention(width, max_frames, depth, heads, attn_impl=attn_impl)
    raise ValueError(f"unknown temporal pooling {kind!r} (none, mean or attention)")


def encode_clips(tower: nn.Module, temporal: nn.Module | None, clips: torch.Tensor) -> torch.Tensor:
    """[B, T, 3, H, W] clips -> [B, D]: every frame through ``tower`` as one [B*T] batch, then
    pooled over T by ``temporal``."""
    if temporal is None:
        raise ValueError(
            f"clips of shape {list(clips.shape)} need temporal pooling (model.vision.temporal mean or attention)"
        )
    b, t = clips.shape[:2]
    features = tower(clips.flatten(0, 1))
    return temporal(features.view(b, t, *features.shape[1:]))
