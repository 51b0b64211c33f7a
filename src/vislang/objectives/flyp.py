"""FLYP (Goyal et al. 2023, "Finetune like you pretrain"): fine-tune on labelled images with the
pretraining loss itself. Each image's text is a prompt of its class (the labelled source writes
one prompt per class and batch), both towers train, and the loss is CLIP's contrastive loss, so
the fine-tuned weights stay where the zero-shot ones were: same parameters, same scoring, and
a WiSE-FT interpolation with the pretrained model is defined.

A batch of a task with few classes holds many images of each class; their prompts are the
same text, so counting them as each other's negatives would push an image away from its own
class. Same-class pairs other than the pair itself are therefore left out of both softmaxes
(:func:`vislang.losses.clip_loss` with ``classes``).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from vislang.classes import ClassTask
from vislang.config import ModelConfig, TrainConfig
from vislang.losses import clip_loss
from vislang.models.two_tower import TwoTower
from vislang.objectives.contrastive import EmbeddingObjective, TwoTowerConfig
from vislang.objectives.towers import build_two_tower


class FlypConfig(TwoTowerConfig):
    """Contrastive fine-tuning against class prompts (FLYP)."""

    kind: Literal["flyp"] = Field("flyp", description="the objective")

    needs_labels: ClassVar[bool] = True
    accepts_hard_negatives: ClassVar[bool] = False
    accepts_cit: ClassVar[bool] = False

    def check(self, model: ModelConfig, train: TrainConfig) -> None:
        super().check(model, train)
        if self.hard_negative_images:
            raise ValueError(
                "objective.hard_negative_images: FLYP's texts are class prompts, there are no pairs to mine"
            )

    def build(
        self, model: ModelConfig, vocab_size: int, pad_id: int, classes: ClassTask | None = None
    ) -> FlypObjective:
        return FlypObjective(build_two_tower(model, vocab_size, pad_id))


class FlypObjective(EmbeddingObjective):
    exact_accumulation = True

    def __init__(self, model: TwoTower) -> None:
        super().__init__(model, None)

    def embed(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image, text = self.model(batch["image"], batch["text"])
        return {"image": image, "text": text, "label": batch["label"]}

    def loss_from_embeddings(self, embeddings: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        loss = clip_loss(
            embeddings["image"], embeddings["text"], self.model.scale(), classes=embeddings["label"], group=self.group
        )
        return {"loss": loss, "contrastive": loss.detach()}
