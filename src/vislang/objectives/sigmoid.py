"""Sigmoid objective (SigLIP): every image–text pair is an independent binary decision."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from vislang.classes import ClassTask
from vislang.config import ModelConfig, TrainConfig
from vislang.losses import siglip_loss
from vislang.models.two_tower import TwoTower
from vislang.objectives.contrastive import EmbeddingObjective, TwoTowerConfig
from vislang.objectives.hard_negatives import ImageBank, image_bank
from vislang.objectives.towers import build_two_tower


class SiglipConfig(TwoTowerConfig):
    """Sigmoid pairwise loss (SigLIP); needs ``model.init_logit_bias`` (SigLIP: -10)."""

    kind: Literal["siglip"] = Field("siglip", description="the objective")
    ring: bool = Field(
        False,
        description="across ranks: pass text blocks around the ranks (B x B logits at a time) instead of gathering "
        "every rank's texts",
    )
    chunk: int = Field(
        0,
        ge=0,
        description="compute the logits this many texts at a time and recompute them in the backward pass, so the "
        "loss holds B x chunk logits instead of B x all texts (0 = off; exact)",
    )

    def check(self, model: ModelConfig, train: TrainConfig) -> None:
        super().check(model, train)
        if model.init_logit_bias is None:
            raise ValueError(
                "the siglip objective needs model.init_logit_bias (SigLIP: init_logit_scale 10, init_logit_bias -10)"
            )

    def build(
        self, model: ModelConfig, vocab_size: int, pad_id: int, classes: ClassTask | None = None
    ) -> SiglipObjective:
        two_tower = build_two_tower(model, vocab_size, pad_id)
        return SiglipObjective(two_tower, image_bank(self.hard_negative_images, model), self.ring, self.chunk)


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
