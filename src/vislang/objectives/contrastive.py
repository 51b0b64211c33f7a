"""Softmax contrastive objective (CLIP, ALIGN): InfoNCE over the batch in both directions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vislang.losses import clip_loss
from vislang.models.two_tower import TwoTower
from vislang.objectives.base import Objective


class EmbeddingObjective(Objective):
    """Shared scoring for two-tower objectives: cosine similarity of normalised embeddings."""

    def __init__(self, model: TwoTower) -> None:
        super().__init__()
        self.model = model

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

    def negatives(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Embeddings of the batch's valid hard-negative captions (``text_neg``), if any."""
        if "text_neg" not in batch:
            return None
        return self.model.encode_text(batch["text_neg"][batch["text_neg_valid"]])

    def log_values(self) -> dict[str, float]:
        values = {"logit_scale": self.model.scale().item()}
        if self.model.logit_bias is not None:
            values["logit_bias"] = self.model.bias().item()
        return values


class ClipObjective(EmbeddingObjective):
    def __init__(self, model: TwoTower, label_smoothing: float = 0.0) -> None:
        super().__init__(model)
        self.label_smoothing = label_smoothing

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image, text = self.model(batch["image"], batch["text"])
        loss = clip_loss(
            image,
            text,
            self.model.scale(),
            label_smoothing=self.label_smoothing,
            text_negatives=self.negatives(batch),
        )
        return {"loss": loss, "contrastive": loss.detach()}
