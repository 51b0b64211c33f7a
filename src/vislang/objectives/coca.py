"""CoCa objective: contrastive loss on the pooled embeddings plus captioning loss on the
decoder, weighted ``contrastive_weight`` and ``caption_weight`` (paper: 1 and 2). Zero-shot and
retrieval use the embeddings, as the paper does."""

from __future__ import annotations

import torch

from vislang.losses import clip_loss
from vislang.models.coca import CoCa
from vislang.objectives.captioning import caption_loss
from vislang.objectives.contrastive import EmbeddingObjective


class CocaObjective(EmbeddingObjective):
    def __init__(self, model: CoCa, pad_id: int, contrastive_weight: float = 1.0, caption_weight: float = 2.0) -> None:
        super().__init__(model)
        self.pad_id, self.contrastive_weight, self.caption_weight = pad_id, contrastive_weight, caption_weight

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tokens = batch["text"]
        image, text, logits = self.model(batch["image"], tokens)
        contrastive = clip_loss(image, text, self.model.scale(), group=self.group)
        caption = caption_loss(logits, tokens, self.pad_id)
        loss = self.contrastive_weight * contrastive + self.caption_weight * caption
        return {"loss": loss, "contrastive": contrastive.detach(), "caption": caption.detach()}
