"""Two-tower model: an image encoder and a text encoder projected into one embedding space,
with a learnable temperature (stored as a log, CLIP init 1/0.07, never above
``max_logit_scale``) and an optional learnable bias (SigLIP); see :mod:`vislang.models.logit_scale`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vislang.models.logit_scale import LogitScaleMixin
from vislang.models.temporal import encode_clips


class TwoTower(LogitScaleMixin, nn.Module):
    def __init__(
        self,
        vision: nn.Module,
        text: nn.Module,
        init_logit_scale: float = 1 / 0.07,
        max_logit_scale: float = 100.0,
        init_logit_bias: float | None = None,
        temporal: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.vision, self.text = vision, text
        self.temporal = temporal  # pools frame features of [B, T, 3, H, W] clips (models.temporal)
        self.add_logit_scale(init_logit_scale, max_logit_scale, init_logit_bias)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        features = encode_clips(self.vision, self.temporal, images) if images.dim() == 5 else self.vision(images)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        features = self.text(tokens)
        return F.normalize(features, dim=-1) if normalize else features

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(images), self.encode_text(tokens)
