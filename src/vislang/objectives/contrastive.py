"""Softmax contrastive objective (CLIP, ALIGN): InfoNCE over the batch in both directions."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from vislang.classes import ClassTask
from vislang.config import ModelConfig, TrainConfig
from vislang.losses import clip_loss
from vislang.models.two_tower import TwoTower
from vislang.objectives.base import Objective, ObjectiveConfig
from vislang.objectives.hard_negatives import ImageBank, image_bank
from vislang.objectives.towers import build_two_tower


class TwoTowerConfig(ObjectiveConfig):
    """What the two-tower objectives (CLIP, SigLIP) share: NegCLIP's hard-negative images."""

    hard_negative_images: int = Field(
        0,
        ge=0,
        description="NegCLIP's hard-negative images: a bank of this many recent pairs; each image's nearest bank "
        "neighbour joins the batch with its caption (0 = off)",
    )

    contrastive: ClassVar[bool] = True
    accepts_hard_negatives: ClassVar[bool] = True
    accepts_cit: ClassVar[bool] = True
    accepts_pretrained_text: ClassVar[bool] = True

    def check(self, model: ModelConfig, train: TrainConfig) -> None:
        super().check(model, train)
        if train.accum_steps > 1 and self.hard_negative_images:
            raise ValueError("train.accum_steps > 1 does not work with objective.hard_negative_images (the bank)")


class ClipConfig(TwoTowerConfig):
    """Softmax contrastive learning (CLIP, ALIGN)."""

    kind: Literal["clip"] = Field("clip", description="the objective")
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, allow_inf_nan=False, description="label smoothing of the softmax (ALIGN uses 0.1)"
    )

    def build(
        self, model: ModelConfig, vocab_size: int, pad_id: int, classes: ClassTask | None = None
    ) -> ClipObjective:
        bank = image_bank(self.hard_negative_images, model)
        return ClipObjective(build_two_tower(model, vocab_size, pad_id), self.label_smoothing, bank)


class EmbeddingObjective(Objective):
    """Shared scoring for two-tower objectives: cosine similarity of normalised embeddings.

    With an :class:`ImageBank`, :meth:`embed_batch` adds each image's nearest bank neighbour
    (with its caption) to the batch as a hard negative pair.
    """

    def __init__(self, model: TwoTower, bank: ImageBank | None = None) -> None:
        super().__init__()
        self.model, self.bank = model, bank
        self.extra_pairs = 0  # bank neighbours added to the last batch (logged)

    def embed_batch(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised image and text embeddings of the batch's pairs (plus bank neighbours)."""
        images, texts = batch["image"], batch["text"]
        image, text = self.model(images, texts)
        if self.bank is None:
            return image, text
        found = self.bank.neighbours(image.detach())
        self.bank.add(images, texts, image.detach())
        if found is None:
            return image, text
        extra_image, extra_text = self.model(*found)
        self.extra_pairs = len(found[0])
        return torch.cat([image, extra_image]), torch.cat([text, extra_text])

    def embed(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``image`` and ``text`` embeddings of the pairs, ``text_neg`` of the valid hard negatives."""
        image, text = self.embed_batch(batch)
        negatives = self.negatives(batch, text)
        return {"image": image, "text": text} | ({"text_neg": negatives} if negatives is not None else {})

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.loss_from_embeddings(self.embed(batch))

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images).float()

    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens).float()

    def scores(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        return image_features @ text_features.T

    def pair_scores(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nd,nkd->nk", image_features, text_features)

    def ensemble_texts(self, text_features: torch.Tensor) -> torch.Tensor:
        # CLIP's prompt ensembling: normalised mean of the normalised template embeddings.
        return F.normalize(text_features.mean(dim=0), dim=-1)

    def negatives(self, batch: dict[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor | None:
        """Embeddings of the batch's valid hard-negative captions (``text_neg``); an empty [0, D]
        tensor when none of them is valid, so every rank still joins the gather of negatives."""
        if "text_neg" not in batch:
            return None
        valid = batch["text_neg_valid"]
        if not valid.any():
            return like.new_zeros((0, like.shape[1]))
        return self.model.encode_text(batch["text_neg"][valid])

    def log_values(self) -> dict[str, float]:
        values = {"logit_scale": self.model.scale().item()}
        if self.bank is not None:
            values["hard_negative_images"] = float(self.extra_pairs)
        if self.model.logit_bias is not None:
            values["logit_bias"] = self.model.bias().item()
        return values


class ClipObjective(EmbeddingObjective):
    exact_accumulation = True

    def __init__(self, model: TwoTower, label_smoothing: float = 0.0, bank: ImageBank | None = None) -> None:
        super().__init__(model, bank)
        self.label_smoothing = label_smoothing

    def loss_from_embeddings(self, embeddings: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        loss = clip_loss(
            embeddings["image"],
            embeddings["text"],
            self.model.scale(),
            label_smoothing=self.label_smoothing,
            text_negatives=embeddings.get("text_neg"),
            group=self.group,
        )
        return {"loss": loss, "contrastive": loss.detach()}
