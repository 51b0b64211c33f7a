"""The ``model`` section: image tower, text tower, shared embedding and logit scale.

The objective's own architecture parts (a captioner's decoder) live in the objective's section;
see :mod:`vislang.objectives`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from vislang.config.base import Section

Activation = Literal["gelu", "gelu_tanh", "quick_gelu"]
LOCK = (
    "LiT-style locking: freeze the tower's weights (and keep its BatchNorm statistics fixed), except its last "
    "unlocked_blocks transformer blocks and, with any unlocked, its head (final norm, pooling, projection); "
    "shorthand for train.param_rules"
)


class VisionConfig(Section):
    kind: Literal["vit", "timm"] = Field(
        "vit", description="vit: vislang's ViT (the fields below); timm: any timm model by name (timm_model)"
    )
    timm_model: str | None = Field(None, description="kind timm: the timm model name, e.g. convnext_tiny")
    timm_pretrained: str | None = Field(
        None, description="kind timm: a local weights file for the timm model (never downloaded)"
    )
    timm_kwargs: dict[str, Any] = Field(
        {}, description="kind timm: passed to timm.create_model, e.g. {img_size: 64, drop_path_rate: 0.1}"
    )
    image_size: int = Field(48, gt=0, description="input resolution in pixels (square)")
    patch_size: int = Field(8, gt=0, description="ViT patch size in pixels")
    width: int = Field(64, gt=0, description="ViT token width")
    depth: int = Field(3, ge=0, description="ViT transformer blocks")
    heads: int = Field(2, gt=0, description="attention heads per block (must divide width)")
    mlp_ratio: float = Field(
        2.0, gt=0, allow_inf_nan=False, description="MLP hidden width / token width (the demo's 2; CLIP presets 4)"
    )
    stem: Literal["patch", "conv"] = Field(
        "conv",
        description="patch: one strided convolution; conv: log2(patch_size) stride-2 3x3 convolutions "
        "(Xiao et al. 2021), which make small ViTs learn shape far faster",
    )
    pool: Literal["cls", "mean", "map"] = Field(
        "mean", description="class token, mean of the patch tokens, or multihead attention pooling (MAP)"
    )
    patch_bias: bool = Field(True, description="bias of the patch convolution (OpenCLIP/HF CLIP: none; SigLIP: one)")
    ln_pre: bool = Field(True, description="LayerNorm on the tokens before the first block (CLIP has it, SigLIP not)")
    proj: Literal["linear", "none"] = Field(
        "linear", description="projection of the pooled feature to model.embed_dim; none needs embed_dim == width"
    )
    act: Activation = Field(
        "gelu",
        description="MLP activation: gelu (exact), gelu_tanh (SigLIP) or quick_gelu (x * sigmoid(1.702x), "
        "OpenAI's original CLIP weights)",
    )
    norm_eps: float = Field(1e-5, gt=0, allow_inf_nan=False, description="LayerNorm epsilon (SigLIP: 1e-6)")
    pos_embed: Literal["learned", "sincos2d"] = Field(
        "learned",
        description="learned (CLIP: trained from 0.02-scale noise) or sincos2d (fixed 2D sine-cosine, MAE and "
        "big_vision), which gives every token its position at full strength from step 0",
    )
    mask_ratio: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        allow_inf_nan=False,
        description="FLIP: share of image patch tokens dropped at random while training (0 = off); never in eval",
    )
    image_mean: tuple[float, float, float] = Field((0.5, 0.5, 0.5), description="per-channel normalisation mean")
    image_std: tuple[float, float, float] = Field(
        (0.25, 0.25, 0.25), description="per-channel normalisation standard deviation (each greater than 0)"
    )
    grad_checkpointing: bool = Field(False, description="recompute block activations in the backward pass")
    lock: bool = Field(False, description=LOCK)
    unlocked_blocks: int = Field(0, ge=0, description="with lock: the last blocks that stay trainable")
    temporal: Literal["none", "mean", "attention"] = Field(
        "none",
        description="clips [B, T, 3, H, W] (data.frames > 1): every frame goes through the tower, then the frame "
        "features are pooled over T by their mean (blind to frame order) or by attention (learned temporal "
        "positions + transformer blocks over the frames: sees order); none: still images only",
    )
    max_frames: int = Field(32, ge=1, description="temporal attention: the most frames a clip may have (positions)")
    temporal_depth: int = Field(1, ge=1, description="temporal attention: transformer blocks over the frame features")
    temporal_heads: int = Field(
        2, ge=1, description="temporal attention: heads of those blocks (must divide model.embed_dim)"
    )
    init_from: str | None = Field(
        None,
        description="start this tower from another run's image tower: a vislang checkpoint file or run directory "
        "(e.g. a Cap run for CapPa's LiT evaluation); tensors the source lacks start fresh",
    )

    @field_validator("image_mean")
    @classmethod
    def _finite(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(math.isfinite(v) for v in value):
            raise ValueError(f"must be finite numbers, got {list(value)}")
        return value

    @field_validator("image_std")
    @classmethod
    def _positive(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(0 < v < math.inf for v in value):
            raise ValueError(f"must each be a finite number greater than 0, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _check(self) -> VisionConfig:
        if self.kind == "timm":
            if not self.timm_model:
                raise ValueError("model.vision.kind timm needs timm_model (a timm model name)")
            if self.unlocked_blocks:
                raise ValueError("unlocked_blocks applies to the vit tower; unlock timm layers with train.param_rules")
            return self
        if self.timm_model or self.timm_pretrained or self.timm_kwargs:
            raise ValueError("timm_model, timm_pretrained and timm_kwargs need model.vision.kind timm")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.stem == "conv" and (self.patch_size < 2 or self.patch_size & (self.patch_size - 1)):
            raise ValueError(f"the conv stem needs a power-of-two patch_size, got {self.patch_size}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.patch_bias is False and self.stem != "patch":
            raise ValueError("patch_bias applies to the patch stem only")
        return self


class TextConfig(Section):
    context_length: int = Field(18, ge=3, description="tokens per text, start and end tokens included")
    width: int = Field(64, gt=0, description="text transformer width")
    depth: int = Field(2, ge=0, description="text transformer blocks (CoCa: the unimodal blocks)")
    heads: int = Field(2, gt=0, description="attention heads per block (must divide width)")
    mlp_ratio: float = Field(
        2.0, gt=0, allow_inf_nan=False, description="MLP hidden width / width (the demo's 2; CLIP presets 4)"
    )
    causal: bool = Field(True, description="causal (CLIP) or bidirectional (SigLIP-style) self-attention")
    pool: Literal["eot", "last", "mean", "cls", "end"] = Field(
        "eot",
        description="eot/last: the last token before the padding; mean; cls (pretrained encoders); end: the "
        "context's final position whatever it holds (SigLIP's released models)",
    )
    mask_padding: bool = Field(
        True, description="bidirectional towers hide padding keys from attention (SigLIP's released models: false)"
    )
    proj_bias: bool = Field(False, description="bias of the linear projection (SigLIP's text head has one)")
    act: Activation = Field("gelu", description="MLP activation, as model.vision.act")
    norm_eps: float = Field(1e-5, gt=0, allow_inf_nan=False, description="LayerNorm epsilon")
    grad_checkpointing: bool = Field(False, description="recompute block activations in the backward pass")
    pretrained: str | None = Field(
        None,
        description="a local Hugging Face model directory: its encoder is the text tower and its tokenizer the "
        "run's (width/depth/heads/causal unused; pool cls or mean)",
    )
    proj: Literal["linear", "mlp"] = Field("linear", description="projection to the shared embedding")
    lock: bool = Field(False, description=LOCK)
    unlocked_blocks: int = Field(0, ge=0, description="with lock: the last blocks that stay trainable")

    @model_validator(mode="after")
    def _check(self) -> TextConfig:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.pretrained and self.pool not in ("cls", "mean"):
            raise ValueError(f"a pretrained text encoder pools with cls or mean, not {self.pool!r}")
        if self.pretrained and self.unlocked_blocks:
            raise ValueError(
                "unlocked_blocks does not apply to a pretrained encoder; unfreeze its layers with train.param_rules"
            )
        return self


class ModelConfig(Section):
    preset: str | None = Field(
        None, description="a named architecture (vislang.config.presets); fields given beside it override it"
    )
    embed_dim: int = Field(64, gt=0, description="dimension of the shared image-text embedding")
    attn_impl: Literal["auto", "sdpa", "math"] = Field(
        "auto",
        description="auto: plain attention on CPUs except emulated bf16/fp16, the fused kernel elsewhere",
    )
    init_logit_scale: float = Field(
        1 / 0.07, gt=0, allow_inf_nan=False, description="initial multiplicative logit scale (CLIP: 1/0.07)"
    )
    max_logit_scale: float = Field(
        100.0, gt=0, allow_inf_nan=False, description="the logit scale is clamped at this value"
    )
    init_logit_bias: float | None = Field(
        None,
        allow_inf_nan=False,
        description="None: no learnable bias (CLIP); a number: a learnable bias with that start (SigLIP: -10)",
    )
    vision: VisionConfig = Field(VisionConfig(), description="the image tower")
    text: TextConfig = Field(TextConfig(), description="the text tower")

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.vision.temporal == "attention" and self.embed_dim % self.vision.temporal_heads:
            raise ValueError(
                f"model.vision.temporal_heads {self.vision.temporal_heads} must divide embed_dim {self.embed_dim}"
            )
        if self.vision.kind == "vit" and self.vision.proj == "none" and self.vision.width != self.embed_dim:
            raise ValueError(
                f"model.vision.proj none needs embed_dim ({self.embed_dim}) equal to the vision width ({self.vision.width})"
            )
        return self
