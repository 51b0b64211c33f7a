"""Sigmoid objective (SigLIP): every image–text pair is an independent binary decision."""

from __future__ import annotations

import torch

from vislang.losses import siglip_loss
from vislang.models.two_tower import TwoTower
from vislang.objectives.contrastive import EmbeddingObjective
from vislang.objectives.hard_negatives import ImageBank


class SiglipObjective(EmbeddingObjective):
    def __init__(self, model: TwoTower, bank: ImageBank | None = None) -> None:
        if model.logit_bias is None:
            raise ValueError("the siglip objective needs a logit bias: set model.init_logit_bias (SigLIP uses -10)")
        super().__init__(model, bank)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image, text = self.embed_batch(batch)
        loss = siglip_loss(
            image, text, self.model.scale(), self.model.bias(), text_negatives=self.negatives(batch, text)
        )
        return {"loss": loss, "sigmoid": loss.detach()}
