"""Masked autoencoder (He et al. 2022) around vislang's ViT: the image tower pretrained alone.

Per sample a random share of the patches is hidden; the encoder (the ViT, under ``vision`` so
that ``model.vision.init_from`` of such a run finds it) sees only the visible ones, and a light
decoder of its own width, with a learned mask token and its own fixed positions, predicts the
pixels of every patch. The loss (in the objective) counts the hidden patches only.

Patch pixels are flattened in the grid's row-major order, the order of the ViT's tokens, each
patch as (row, column, channel) values.
"""

from __future__ import annotations

import torch
from torch import nn

from vislang.models.layers import Transformer
from vislang.models.vision.vit import VisionTransformer, sincos_2d


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B, 3, H, W] -> [B, (H/p)*(W/p), p*p*3]: each patch's pixels, patches in row-major order."""
    b, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def random_keep(
    batch: int, n_patches: int, keep: int, device: torch.device | None = None, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """MAE's per-sample masking: (indices of the ``keep`` visible patches per sample in grid
    order [B, keep], mask [B, n_patches] with 1.0 where a patch is hidden)."""
    noise = torch.rand(batch, n_patches, device=device, generator=generator)
    keep_index = noise.argsort(dim=1)[:, :keep].sort(dim=1).values
    mask = torch.ones(batch, n_patches, device=device)
    mask.scatter_(1, keep_index, 0.0)
    return keep_index, mask


class MaeDecoder(nn.Module):
    """Visible encoder tokens -> pixels of every patch. Mask tokens fill the hidden positions;
    positions are fixed 2D sine-cosine (MAE's), so the decoder learns nothing position-specific
    beyond what the encoder hands it."""

    def __init__(
        self,
        encoder_width: int,
        grid: int,
        patch_pixels: int,
        width: int = 64,
        depth: int = 2,
        heads: int = 2,
        mlp_ratio: float = 4.0,
        attn_impl: str = "auto",
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(encoder_width, width)
        self.mask_token = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.register_buffer("pos_embed", sincos_2d(grid, width), persistent=False)
        self.transformer = Transformer(width, depth, heads, mlp_ratio, attn_impl)
        self.norm = nn.LayerNorm(width)
        self.pred = nn.Linear(width, patch_pixels)

    def forward(self, visible: torch.Tensor, keep_index: torch.Tensor) -> torch.Tensor:
        """[B, K, encoder_width] tokens of the patches ``keep_index`` -> [B, N, patch_pixels]."""
        x = self.embed(visible)
        b, n = x.shape[0], self.pos_embed.shape[1]
        full = self.mask_token.to(x.dtype).expand(b, n, -1).clone()
        full.scatter_(1, keep_index.unsqueeze(-1).expand(-1, -1, x.shape[-1]), x)
        full = full + self.pos_embed.to(x.dtype)
        return self.pred(self.norm(self.transformer(full)))


class MaskedAutoencoder(nn.Module):
    """The ViT encoder (``vision``) and the pixel decoder (``decoder``)."""

    def __init__(self, vision: VisionTransformer, decoder: MaeDecoder) -> None:
        super().__init__()
        self.vision, self.decoder = vision, decoder

    def forward(
        self, images: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(predicted pixels [B, N, P], target pixels [B, N, P], mask [B, N], 1 = hidden)."""
        target = patchify(images, self.vision.patch_size)
        b, n = target.shape[:2]
        keep = max(1, round(n * (1 - mask_ratio)))
        keep_index, mask = random_keep(b, n, keep, images.device, generator)
        tokens = self.vision.visible_tokens(images, keep_index)
        if self.vision.cls_token is not None:
            tokens = tokens[:, 1:]  # the decoder reconstructs patches; the class token has none
        return self.decoder(tokens, keep_index), target, mask

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Mean of the encoder's tokens over the whole image: [B, width]."""
        return self.vision.tokens(images).mean(dim=1)
