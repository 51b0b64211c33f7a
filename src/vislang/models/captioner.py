"""Image captioner (Cap, CapPa): a ViT whose patch tokens a text decoder cross-attends to.

No pooling and no image embedding: the vision tower is learned only through the captioning
loss. ``image_context`` and ``decoder`` are the interface that generation and log-likelihood
scoring use, shared with :class:`vislang.models.coca.CoCa`.
"""

from __future__ import annotations

import torch
from torch import nn

from vislang.models.text.decoder import TextDecoder
from vislang.models.vision.vit import VisionTransformer


class Captioner(nn.Module):
    def __init__(self, vision: VisionTransformer, decoder: TextDecoder, decoder_width: int) -> None:
        super().__init__()
        self.vision, self.decoder = vision, decoder
        self.context_proj = nn.Linear(vision.width, decoder_width)

    def image_context(self, images: torch.Tensor) -> torch.Tensor:
        """The decoder's cross-attention context: projected patch tokens [B, L, decoder width]."""
        return self.context_proj(self.vision.tokens(images))

    def forward(self, images: torch.Tensor, tokens: torch.Tensor, parallel: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits [B, L, vocab] for input ``tokens`` (teacher forcing)."""
        return self.decoder(tokens, self.image_context(images), parallel)[0]
