"""MAE objective: the image tower pretrained alone by reconstructing hidden patches (He et al.
2022), CONCH's first unimodal stage. Captions in the batch are ignored.

The encoder is the run's ViT at ``model.vision`` under the name ``vision``, so its checkpoint
keeps it under ``model.vision.`` and a later CLIP or CoCa run starts its image tower from it
with ``model.vision.init_from: <this run>``. The pixel decoder is dropped there.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from vislang.classes import ClassTask
from vislang.config import ModelConfig, Section, TrainConfig
from vislang.errors import ConfigError
from vislang.losses import full_precision
from vislang.models.vision.mae import MaeDecoder, MaskedAutoencoder
from vislang.objectives.base import Objective, ObjectiveConfig
from vislang.objectives.towers import build_vision


class MaeDecoderConfig(Section):
    """The light pixel decoder (MAE: narrower and shallower than the encoder)."""

    width: int = Field(64, ge=4, description="decoder width (a multiple of 4: fixed 2D sine-cosine positions)")
    depth: int = Field(2, ge=1, description="decoder transformer blocks")
    heads: int = Field(2, ge=1, description="decoder attention heads")
    mlp_ratio: float = Field(4.0, gt=0, allow_inf_nan=False, description="decoder MLP hidden size / width")


class MaeConfig(ObjectiveConfig):
    """MAE: per-sample random masking, encoder on the visible patches, pixels of the hidden ones."""

    stage_inputs: ClassVar[frozenset[str]] = frozenset()  # the pixel decoder's grid keeps its size

    kind: Literal["mae"] = Field("mae", description="the objective")
    mask_ratio: float = Field(
        0.75, gt=0, lt=1, allow_inf_nan=False, description="share of each image's patches hidden (paper: 0.75)"
    )
    norm_pix_loss: bool = Field(
        True,
        description="targets are each patch's pixels normalised by the patch's own mean and variance (MAE's "
        "better-representation setting); false: the normalised image's pixels as they are",
    )
    decoder: MaeDecoderConfig = Field(MaeDecoderConfig(), description="the pixel decoder")

    def check(self, model: ModelConfig, train: TrainConfig) -> None:
        super().check(model, train)
        if model.vision.kind != "vit":
            raise ValueError("objective mae trains vislang's ViT (model.vision.kind: vit), not a timm tower")
        if self.decoder.width % 4:
            raise ValueError(f"objective.decoder.width {self.decoder.width} must be a multiple of 4")
        if self.decoder.width % self.decoder.heads:
            raise ValueError(f"objective.decoder.width {self.decoder.width} is not divisible by its heads")

    def build(self, model: ModelConfig, vocab_size: int, pad_id: int, classes: ClassTask | None = None) -> MaeObjective:
        vision = build_vision(model, None)
        d = self.decoder
        patch_pixels = 3 * model.vision.patch_size**2
        decoder = MaeDecoder(
            vision.width, vision.grid, patch_pixels, d.width, d.depth, d.heads, d.mlp_ratio, model.attn_impl
        )
        return MaeObjective(MaskedAutoencoder(vision, decoder), self.mask_ratio, self.norm_pix_loss)


def masked_patch_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool, eps: float = 1e-6
) -> torch.Tensor:
    """Mean squared error per patch [B, N, P], averaged over the hidden patches (``mask`` 1) only;
    with ``norm_pix`` each target patch is first normalised by its own mean and (unbiased) variance."""
    pred, target = full_precision(pred), target.float()
    if norm_pix:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + eps).sqrt()
    per_patch = (pred - target).pow(2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum()


class MaeObjective(Objective):
    """Scores nothing across modalities: there is no text tower. ``image_features`` (the mean of
    the encoder's tokens) serve image-only evaluations such as probes."""

    def __init__(self, model: MaskedAutoencoder, mask_ratio: float = 0.75, norm_pix_loss: bool = True) -> None:
        super().__init__()
        self.model, self.mask_ratio, self.norm_pix_loss = model, mask_ratio, norm_pix_loss

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pred, target, mask = self.model(batch["image"], self.mask_ratio)
        loss = masked_patch_loss(pred, target, mask, self.norm_pix_loss)
        return {"loss": loss, "reconstruction": loss.detach()}

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.features(images)

    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        raise ConfigError("objective mae has no text tower: give its run eval.tasks: [] (or image-only tasks)")

    def scores(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        raise ConfigError("objective mae has no text tower: give its run eval.tasks: [] (or image-only tasks)")
