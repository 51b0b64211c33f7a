"""Sigmoid objective (SigLIP): every image–text pair is an independent binary decision."""

from __future__ import annotations

import torch

from vislang.losses import siglip_loss
from vislang.models.two_tower import TwoTower
from vislang.objectives.contrastive import EmbeddingObjective
from vislang.objectives.hard_negatives import ImageBank


class SiglipObjective(EmbeddingObjective):
    exact_accumulation = True

    def __init__(self, model: TwoTower, bank: ImageBank | None = None, ring: bool = False, chunk: int = 0) -> None:
        if model.logit_bias is None:
            raise ValueError("the siglip objective needs a logit bias: set model.init_logit_bias (SigLIP uses -10)")
        super().__init__(model, bank)
        self.ring, self.chunk = ring, chunk

    def loss_from_embeddings(self, embeddings: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        loss = siglip_loss(
            embeddings["image"],
            embeddings["text"],
            self.model.scale(),
            self.model.bias(),
            text_negatives=embeddings.get("text_neg"),
            group=self.group,
            ring=self.ring,
            chunk=self.chunk,
        )
        return {"loss": loss, "sigmoid": loss.detach()}
