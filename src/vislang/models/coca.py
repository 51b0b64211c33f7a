"""CoCa (Yu et al. 2022): contrastive and captioning in one model.

Image: ViT patch tokens, then two attentional poolers — one query gives the contrastive image
embedding, ``n_queries`` queries give the decoder's context. Text: the decoder's unimodal
(text-only, causal) blocks with a CLS token appended; the CLS output is the contrastive text
embedding; the multimodal blocks then cross-attend to the image context and predict the
caption. ``encode_image``/``encode_text``/``scale`` make it usable wherever a two-tower model is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vislang.models.layers import AttentionPool
from vislang.models.logit_scale import LogitScaleMixin
from vislang.models.text.decoder import TextDecoder
from vislang.models.vision.vit import VisionTransformer


class CoCa(LogitScaleMixin, nn.Module):
    def __init__(
        self,
        vision: VisionTransformer,
        decoder: TextDecoder,
        embed_dim: int,
        text_width: int,
        n_queries: int,
        init_logit_scale: float = 1 / 0.07,
        max_logit_scale: float = 100.0,
    ) -> None:
        super().__init__()
        self.vision, self.decoder = vision, decoder
        width, heads, mlp_ratio = vision.width, vision.heads, vision.mlp_ratio
        self.contrastive_pool = AttentionPool(width, heads, mlp_ratio, n_queries=1)
        self.caption_pool = AttentionPool(width, heads, mlp_ratio, n_queries=n_queries)
        self.image_proj = nn.Linear(width, embed_dim, bias=False)
        self.context_proj = nn.Linear(width, text_width)
        self.text_proj = nn.Linear(text_width, embed_dim, bias=False)
        self.add_logit_scale(init_logit_scale, max_logit_scale)  # no bias: softmax contrastive only

    def _image(self, images: torch.Tensor, normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.vision.tokens(images)
        embedding = self.image_proj(self.contrastive_pool(tokens))
        context = self.context_proj(self.caption_pool(tokens))
        return (F.normalize(embedding, dim=-1) if normalize else embedding), context

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self._image(images, normalize)[0]

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        embedding = self.text_proj(self.decoder.encode_text(tokens))
        return F.normalize(embedding, dim=-1) if normalize else embedding

    def image_context(self, images: torch.Tensor) -> torch.Tensor:
        return self.context_proj(self.caption_pool(self.vision.tokens(images)))

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image embedding, text embedding, next-token logits for tokens[:, :-1]), embeddings normalised."""
        image, context = self._image(images)
        logits, cls = self.decoder(tokens, context, with_cls=True, predict=slice(None, -1))
        return image, F.normalize(self.text_proj(cls), dim=-1), logits
