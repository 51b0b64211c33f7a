"""Any timm image model as the image tower (ConvNeXt as EchoCLIP, EfficientNet as ALIGN, ResNets,
timm's ViTs), the way OpenCLIP wraps timm: the model without its classifier (``num_classes=0``)
pools with its own global pooling, and a linear projection (or none) maps its features to the
shared embedding. Weights are timm's random initialisation or a local file
(``model.vision.timm_pretrained``): nothing is downloaded.

FLIP masking uses timm's own patch dropout (``patch_drop_rate``, EVA-CLIP style) on the models
that have it (timm's ViTs); timm refuses it elsewhere.

Position embeddings at another image size are timm's business too: a trunk with an absolute
``pos_embed`` (timm's ViTs) is resized with timm's own ``resample_abs_pos_embed`` /
``set_input_size``; convolutional trunks (ConvNeXt, ResNets) have none and take any size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from vislang.errors import ConfigError, first_line

# vislang's pool names -> timm's global_pool values
_POOL = {"cls": "token", "mean": "avg", "map": "map"}


class TimmTower(nn.Module):
    """A timm model as the image tower. Arguments are plain values (the ``model.vision`` fields of
    the same names, mapped by :mod:`vislang.objectives.towers`); errors still name those fields,
    since that is where a user fixes them."""

    def __init__(
        self,
        timm_model: str,
        embed_dim: int | None = None,
        *,
        timm_pretrained: str | None = None,
        timm_kwargs: dict[str, Any] | None = None,
        pool: str = "mean",
        proj: str = "linear",
        mask_ratio: float = 0.0,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        try:
            import timm
        except ImportError:
            raise ConfigError("model.vision.kind timm needs the timm package (pip install timm)") from None
        kwargs = dict(timm_kwargs or {})
        if mask_ratio > 0:
            kwargs["patch_drop_rate"] = mask_ratio
        weights = timm_pretrained
        if weights is not None and not Path(weights).is_file():
            raise ConfigError(f"model.vision.timm_pretrained: weights file not found: {weights}")
        overlay = {"file": str(weights)} if weights is not None else None
        try:
            self.trunk = timm.create_model(
                timm_model,
                pretrained=weights is not None,
                pretrained_cfg_overlay=overlay,
                num_classes=0,
                global_pool=_POOL[pool],
                **kwargs,
            )
        except (RuntimeError, TypeError, ValueError, KeyError, AssertionError) as error:
            message = first_line(error)
            raise ConfigError(f"model.vision: timm cannot build {timm_model!r}: {message}") from None
        if grad_checkpointing:
            self.trunk.set_grad_checkpointing(True)
        self.width = self.trunk.num_features
        if embed_dim is None or proj == "none":
            if embed_dim is not None and embed_dim != self.width:
                raise ConfigError(
                    f"model.vision.proj none needs embed_dim ({embed_dim}) equal to {timm_model}'s "
                    f"{self.width} features"
                )
            self.proj: nn.Module = nn.Identity()
        else:
            self.proj = nn.Linear(self.width, embed_dim, bias=False)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """The trunk's unpooled features as tokens [B, L, features] (feature maps flattened)."""
        x = self.trunk.forward_features(images)
        return x.flatten(2).transpose(1, 2) if x.ndim == 4 else x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.trunk(images))

    def _prefix_tokens(self) -> int:
        """Rows of timm's ``pos_embed`` before the patch grid (class and register tokens, unless
        the model keeps them out of the position table)."""
        return 0 if getattr(self.trunk, "no_embed_class", False) else int(getattr(self.trunk, "num_prefix_tokens", 0))

    def _grid(self) -> tuple[int, int] | None:
        """The patch grid of a trunk with an absolute position table, or None (convolutional trunks)."""
        embed = getattr(self.trunk, "patch_embed", None)
        if not isinstance(getattr(self.trunk, "pos_embed", None), nn.Parameter) or embed is None:
            return None
        return tuple(embed.grid_size)

    def set_image_size(self, image_size: int) -> list[str]:
        """Take images of ``image_size`` from now on, through timm's ``set_input_size``; the
        position table keeps its Parameter (an optimizer holding it keeps it). Convolutional
        trunks need nothing."""
        old = self._grid()
        if old is None:
            return []
        if not hasattr(self.trunk, "set_input_size"):
            raise ConfigError(
                f"the timm trunk {type(self.trunk).__name__} cannot change its input size (no set_input_size)"
            )
        param = self.trunk.pos_embed
        self.trunk.set_input_size(img_size=(image_size, image_size))
        new = self._grid()
        if new == old:
            return []
        with torch.no_grad():
            param.data = self.trunk.pos_embed.data
        self.trunk.pos_embed = param
        return [f"image positions interpolated from a {old[0]}x{old[1]} to a {new[0]}x{new[1]} grid ({image_size} px)"]

    def adapt_positions(self, state: dict[str, torch.Tensor], prefix: str = "") -> list[str]:
        """Resize timm's ``pos_embed`` in ``state`` to this trunk's grid with timm's own resampling."""
        from timm.layers import resample_abs_pos_embed

        key, grid = prefix + "trunk.pos_embed", self._grid()
        if grid is None or key not in state or state[key].shape == self.trunk.pos_embed.shape:
            return []
        saved, prefix_tokens = state[key], self._prefix_tokens()
        side = int((saved.shape[1] - prefix_tokens) ** 0.5)
        if side * side + prefix_tokens != saved.shape[1]:
            raise ValueError(
                f"{key}: {saved.shape[1]} positions are not a square grid plus {prefix_tokens} prefix tokens"
            )
        state[key] = resample_abs_pos_embed(saved, new_size=list(grid), num_prefix_tokens=prefix_tokens)
        return [f"{key}: positions interpolated from a {side}x{side} to a {grid[0]}x{grid[1]} grid (timm)"]

    def set_mask_ratio(self, ratio: float) -> None:
        """Change timm's patch-dropout rate (FLIP's unmasked tuning sets 0)."""
        from timm.layers import PatchDropout

        for layer in self.trunk.modules():
            if isinstance(layer, PatchDropout):
                layer.prob = ratio
