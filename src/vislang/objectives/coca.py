"""CoCa objective: contrastive loss on the pooled embeddings plus captioning loss on the
decoder, weighted ``contrastive_weight`` and ``caption_weight`` (paper: 1 and 2). Zero-shot and
retrieval use the embeddings, as the paper does."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from vislang.classes import ClassTask
from vislang.config import ModelConfig
from vislang.losses import clip_loss
from vislang.models.coca import CoCa
from vislang.objectives.base import ObjectiveConfig
from vislang.objectives.captioning import DecoderConfig, caption_loss
from vislang.objectives.contrastive import EmbeddingObjective
from vislang.objectives.towers import build_coca


class CocaDecoderConfig(DecoderConfig):
    """CoCa's decoder: ``model.text.depth`` unimodal blocks, then ``depth`` multimodal ones."""

    n_queries: int = Field(
        256,
        ge=1,
        description="the captioning pooler's learned queries over the image tokens, the decoder's context (paper: "
        "256; the contrastive pooler has one)",
    )


class CocaConfig(ObjectiveConfig):
    """CoCa: contrastive loss on pooled embeddings plus captioning loss on the decoder."""

    kind: Literal["coca"] = Field("coca", description="the objective")
    contrastive_weight: float = Field(
        1.0, ge=0, allow_inf_nan=False, description="weight of the contrastive loss (paper: 1)"
    )
    caption_weight: float = Field(
        2.0, ge=0, allow_inf_nan=False, description="weight of the captioning loss (paper: 2)"
    )
    decoder: CocaDecoderConfig = Field(CocaDecoderConfig(), description="the text decoder")

    contrastive: ClassVar[bool] = True
    accepts_cit: ClassVar[bool] = True

    @model_validator(mode="after")
    def _some_weight(self) -> CocaConfig:
        if not self.contrastive_weight and not self.caption_weight:
            raise ValueError("contrastive_weight and caption_weight are both 0: nothing would be learned")
        return self

    def build(
        self, model: ModelConfig, vocab_size: int, pad_id: int, classes: ClassTask | None = None
    ) -> CocaObjective:
        coca = build_coca(model, self.decoder.depth, self.decoder.n_queries, vocab_size, pad_id)
        return CocaObjective(coca, pad_id, self.contrastive_weight, self.caption_weight)


class CocaObjective(EmbeddingObjective):
    def __init__(self, model: CoCa, pad_id: int, contrastive_weight: float = 1.0, caption_weight: float = 2.0) -> None:
        super().__init__(model)
        self.pad_id, self.contrastive_weight, self.caption_weight = pad_id, contrastive_weight, caption_weight

    def captioner(self) -> nn.Module:
        return self.model

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tokens = batch["text"]
        image, text, logits = self.model(batch["image"], tokens)
        contrastive = clip_loss(image, text, self.model.scale(), group=self.group)
        caption = caption_loss(logits, tokens, self.pad_id)
        loss = self.contrastive_weight * contrastive + self.caption_weight * caption
        return {"loss": loss, "contrastive": contrastive.detach(), "caption": caption.detach()}
