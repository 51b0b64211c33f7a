"""Two-tower model: an image encoder and a text encoder projected into one embedding space,
with a learnable temperature (stored as a log, CLIP init 1/0.07, never above
``max_logit_scale``) and an optional learnable bias (SigLIP)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class TwoTower(nn.Module):
    def __init__(
        self,
        vision: nn.Module,
        text: nn.Module,
        init_logit_scale: float = 1 / 0.07,
        max_logit_scale: float = 100.0,
        init_logit_bias: float | None = None,
    ) -> None:
        super().__init__()
        self.vision, self.text = vision, text
        self.logit_scale = nn.Parameter(torch.tensor(math.log(init_logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(init_logit_bias))) if init_logit_bias is not None else None
        self.max_log_scale = math.log(max_logit_scale)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        features = self.vision(images)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        features = self.text(tokens)
        return F.normalize(features, dim=-1) if normalize else features

    def scale(self) -> torch.Tensor:
        """The multiplicative logit scale (exp of the parameter, clamped), in fp32."""
        return self.logit_scale.float().clamp(max=self.max_log_scale).exp()

    def bias(self) -> torch.Tensor | None:
        return None if self.logit_bias is None else self.logit_bias.float()

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(images), self.encode_text(tokens)
