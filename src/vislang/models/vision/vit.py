"""Vision Transformer image tower.

Stem: a single strided "patch" convolution, or a small convolutional stem of stride-2 3x3
convolutions (BatchNorm + GELU) ending in a 1x1 projection, which gives tiny ViTs the locality
prior they otherwise lack. Pooling: class token, mean of patch tokens, or multihead attention
pooling (MAP). ``mask_ratio`` drops a random subset of patch tokens per sample while training
(FLIP); in eval mode nothing is ever dropped.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vislang.models.layers import AttentionPool, Transformer
from vislang.models.positions import resize_grid
from vislang.models.vision.timm_tower import TimmTower


def conv_stem(width: int, patch_size: int) -> nn.Sequential:
    """log2(patch_size) stride-2 3x3 convolutions doubling channels up to ``width``, then 1x1."""
    n = int(math.log2(patch_size))
    channels = [3] + [max(width // 2 ** (n - i), 16) for i in range(1, n + 1)]
    layers: list[nn.Module] = []
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.GELU()]
    layers.append(nn.Conv2d(channels[-1], width, 1))
    return nn.Sequential(*layers)


def sincos_2d(grid: int, width: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2D sine-cosine position embedding [1, grid*grid, width] (MAE, big_vision's "sincos2d"):
    a quarter of the channels each for sin/cos of the x and y coordinate at geometric frequencies."""
    if width % 4:
        raise ValueError(f"sincos2d position embedding needs a width divisible by 4, got {width}")
    y, x = torch.meshgrid(
        torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32), indexing="ij"
    )
    omega = 1.0 / temperature ** (torch.arange(width // 4, dtype=torch.float32) / (width // 4))
    x, y = x.flatten()[:, None] * omega, y.flatten()[:, None] * omega
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1)[None]


def keep_random_tokens(tokens: torch.Tensor, keep: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Keep ``keep`` random tokens per sample of [B, L, D], in their original order."""
    b, length, _ = tokens.shape
    noise = torch.rand(b, length, device=tokens.device, generator=generator)
    index = noise.argsort(dim=1)[:, :keep].sort(dim=1).values
    return tokens.gather(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def set_mask_ratio(module: nn.Module, ratio: float) -> None:
    """Set the FLIP mask ratio of every image tower in ``module`` (0 for unmasked tuning)."""
    for tower in module.modules():
        if isinstance(tower, (VisionTransformer, TimmTower)):
            tower.set_mask_ratio(ratio)


def set_image_size(module: nn.Module, image_size: int) -> list[str]:
    """Resize, in place, the positions of every image tower in ``module`` to ``image_size``
    (training stages, evaluating at another size); returns the log lines of what changed."""
    lines = []
    for tower in module.modules():
        if isinstance(tower, (VisionTransformer, TimmTower)):
            lines += tower.set_image_size(image_size)
    return lines


class VisionTransformer(nn.Module):
    """ViT image tower. Arguments are plain values (the ``model.vision`` fields of the same names,
    mapped by :mod:`vislang.objectives.towers`), so the model layer needs no config types.

    ``embed_dim`` None builds a token tower for a decoder (captioners, CoCa): no pooling head and
    no projection. ``width``, ``heads`` and ``mlp_ratio`` stay readable: CoCa's poolers and the
    captioners' context projection are sized from them.
    """

    def __init__(
        self,
        embed_dim: int | None = None,
        *,
        image_size: int = 48,
        patch_size: int = 8,
        width: int = 64,
        depth: int = 3,
        heads: int = 2,
        mlp_ratio: float = 2.0,
        stem: str = "conv",
        pool: str = "mean",
        patch_bias: bool = True,
        ln_pre: bool = True,
        proj: str = "linear",
        act: str = "gelu",
        norm_eps: float = 1e-5,
        pos_embed: str = "learned",
        mask_ratio: float = 0.0,
        grad_checkpointing: bool = False,
        attn_impl: str = "auto",
    ) -> None:
        super().__init__()
        self.width, self.heads, self.mlp_ratio, self.pooling = width, heads, mlp_ratio, pool
        w, eps = width, norm_eps
        if stem == "conv":
            self.stem = conv_stem(w, patch_size)
        else:
            self.stem = nn.Conv2d(3, w, patch_size, stride=patch_size, bias=patch_bias)
        self.patch_size, self.grid = patch_size, image_size // patch_size
        # With a class token the position embedding has one more row, the class token's (CLIP).
        cls = pool == "cls"
        self.cls_token = nn.Parameter(torch.randn(1, 1, w) * w**-0.5) if cls else None
        if pos_embed == "sincos2d":
            fixed = sincos_2d(self.grid, w)
            fixed = torch.cat([torch.zeros(1, 1, w), fixed], dim=1) if cls else fixed
            self.register_buffer("pos_embed", fixed, persistent=False)
        else:
            self.pos_embed = nn.Parameter(torch.randn(1, self.grid**2 + cls, w) * 0.02)
        self.ln_pre = nn.LayerNorm(w, eps=eps) if ln_pre else nn.Identity()
        self.transformer = Transformer(w, depth, heads, mlp_ratio, attn_impl, act, eps)
        self.transformer.grad_checkpointing = grad_checkpointing
        self.ln_post = nn.LayerNorm(w, eps=eps)
        # Towers whose tokens feed a decoder (captioners, CoCa) pool and project elsewhere.
        pooled = embed_dim is not None
        self.attn_pool = (
            AttentionPool(w, heads, mlp_ratio, attn_impl=attn_impl, act=act, norm_eps=eps)
            if pooled and pool == "map"
            else None
        )
        linear = pooled and proj == "linear"
        self.proj = nn.Linear(w, embed_dim, bias=False) if linear else nn.Identity()
        self.mask_ratio = mask_ratio

    def set_mask_ratio(self, ratio: float) -> None:
        """Change the share of patch tokens dropped while training (FLIP's unmasked tuning sets 0)."""
        self.mask_ratio = ratio

    def set_image_size(self, image_size: int) -> list[str]:
        """Take images of ``image_size`` from now on: the grid of positions resized in place (the
        same Parameter, so an optimizer holding it keeps it; a sincos2d table recomputed); the
        class token's row is kept. Returns a log line when the grid changed."""
        grid = image_size // self.patch_size
        if image_size % self.patch_size or grid < 1:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {self.patch_size}")
        if grid == self.grid:
            return []
        old, self.grid = self.grid, grid
        cls = int(self.cls_token is not None)
        with torch.no_grad():
            if isinstance(self.pos_embed, nn.Parameter):
                self.pos_embed.data = resize_grid(self.pos_embed.data, grid, cls)
            else:
                fixed = sincos_2d(grid, self.width).to(self.pos_embed)
                self.pos_embed = torch.cat([self.pos_embed[:, :cls], fixed], dim=1)
        return [f"image positions interpolated from a {old}x{old} to a {grid}x{grid} grid ({image_size} px)"]

    def adapt_positions(self, state: dict[str, torch.Tensor], prefix: str = "") -> list[str]:
        """Resize a learned position embedding in ``state`` (``prefix + "pos_embed"``) to this
        tower's grid, class-token row kept (:mod:`vislang.models.positions`); a sincos2d table is
        not saved, so there is nothing to adapt."""
        key = prefix + "pos_embed"
        if not isinstance(self.pos_embed, nn.Parameter) or key not in state:
            return []
        saved, cls = state[key], int(self.cls_token is not None)
        if saved.shape == self.pos_embed.shape or saved.ndim != 3 or saved.shape[-1] != self.width:
            return []  # the same grid, or not a position table of this width (load_matching names it)
        old = int(math.isqrt(saved.shape[1] - cls))
        state[key] = resize_grid(saved, self.grid, cls)
        return [f"{key}: positions interpolated from a {old}x{old} to a {self.grid}x{self.grid} grid"]

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Patch tokens after the transformer and final norm: [B, L, width] (class token first if any)."""
        x = self.stem(images).flatten(2).transpose(1, 2)
        pos = self.pos_embed.to(x.dtype)
        x = x + (pos[:, 1:] if self.cls_token is not None else pos)
        if self.training and self.mask_ratio > 0:
            x = keep_random_tokens(x, max(1, round(x.shape[1] * (1 - self.mask_ratio))))
        if self.cls_token is not None:
            cls = (self.cls_token.to(x.dtype) + pos[:, :1]).expand(x.shape[0], -1, -1)
            x = torch.cat([cls, x], dim=1)
        return self.ln_post(self.transformer(self.ln_pre(x)))

    def visible_tokens(self, images: torch.Tensor, keep_index: torch.Tensor) -> torch.Tensor:
        """MAE's encoder pass: only the patches ``keep_index`` [B, K] names (indices into the
        row-major grid) enter the transformer, each with its position; the class token, if any,
        first. Returns [B, K (+1), width] after the final norm."""
        x = self.stem(images).flatten(2).transpose(1, 2)
        pos = self.pos_embed.to(x.dtype)
        x = x + (pos[:, 1:] if self.cls_token is not None else pos)
        x = x.gather(1, keep_index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        if self.cls_token is not None:
            cls = (self.cls_token.to(x.dtype) + pos[:, :1]).expand(x.shape[0], -1, -1)
            x = torch.cat([cls, x], dim=1)
        return self.ln_post(self.transformer(self.ln_pre(x)))

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return tokens[:, 0]
        if self.pooling == "mean":
            return tokens.mean(dim=1)
        return self.attn_pool(tokens)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pool(self.tokens(images)))
