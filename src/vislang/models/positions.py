"""Resizing position embeddings, so that weights trained at one image size (or context length)
serve a model of another: a fine-tune at a higher resolution, CLIPA's low-then-high resolution
stages, evaluating a model at a size it was not trained at.

The math is here as pure functions; which tensors of a module are position embeddings, and how
they resize, is declared by the module itself through :class:`AdaptsPositions` (the towers
implement it), never guessed from tensor names.

- A ViT's grid of patch positions is resized as an image: bicubic, ``align_corners=False``
  (OpenCLIP's and timm's convention), with the rows before the grid (the class token's) kept as
  they are. A fixed sine-cosine table is recomputed for the new grid instead.
- A text tower's positions are a sequence: a shorter context keeps the first positions
  (truncation: what CLIP users expect, since every caption that fits is encoded exactly as
  before); a longer one is a linear resize of the whole sequence (``align_corners=False``), so
  the learned order of positions is stretched over the new length.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn


def grid_side(positions: int) -> int:
    """The side of a square grid of ``positions`` cells; ValueError when there is none."""
    side = math.isqrt(positions)
    if side * side != positions:
        raise ValueError(f"{positions} grid positions do not form a square grid")
    return side


def resize_grid(pos: torch.Tensor, grid: int, prefix_tokens: int = 0) -> torch.Tensor:
    """A ViT position embedding [1, prefix_tokens + g*g, D] resized to [1, prefix_tokens + grid*grid, D]:
    the g x g grid interpolated bicubically (in float32, returned in ``pos``'s dtype), the
    ``prefix_tokens`` leading rows (the class token's) copied unchanged."""
    if pos.ndim != 3 or pos.shape[0] != 1:
        raise ValueError(f"a position embedding is [1, tokens, width], got {tuple(pos.shape)}")
    prefix, cells = pos[:, :prefix_tokens], pos[:, prefix_tokens:]
    old = grid_side(cells.shape[1])
    if old == grid:
        return pos.clone()
    width = cells.shape[-1]
    image = cells.float().reshape(1, old, old, width).permute(0, 3, 1, 2)
    resized = F.interpolate(image, size=(grid, grid), mode="bicubic", align_corners=False)
    cells = resized.permute(0, 2, 3, 1).reshape(1, grid * grid, width).to(pos.dtype)
    return torch.cat([prefix, cells], dim=1)


def resize_sequence(pos: torch.Tensor, length: int) -> torch.Tensor:
    """A text position embedding [1, L, D] (or [L, D]) resized to ``length`` positions: the first
    ``length`` rows when shorter, a linear resize of the sequence when longer."""
    flat = pos.ndim == 2
    seq = pos[None] if flat else pos
    if seq.ndim != 3 or seq.shape[0] != 1:
        raise ValueError(f"a position embedding is [1, length, width] or [length, width], got {tuple(pos.shape)}")
    if length <= seq.shape[1]:
        out = seq[:, :length].clone()
    else:
        line = seq.float().transpose(1, 2)  # [1, D, L]: interpolate along the positions
        out = F.interpolate(line, size=length, mode="linear", align_corners=False).transpose(1, 2).to(pos.dtype)
    return out[0] if flat else out


@runtime_checkable
class AdaptsPositions(Protocol):
    """A module that knows its position embeddings: it rewrites those of a state dict (keys under
    ``prefix``) to its own current shapes, returning one log line per tensor it resized."""

    def adapt_positions(self, state: dict[str, torch.Tensor], prefix: str = "") -> list[str]: ...


def adapt_positions(module: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Resize, in ``state`` (keys as in ``module.state_dict()``), the position embeddings of every
    submodule that declares them (:class:`AdaptsPositions`) to that submodule's shapes; returns
    the log lines. Tensors of any other kind are left as they are."""
    lines: list[str] = []
    for name, sub in module.named_modules():
        if isinstance(sub, AdaptsPositions):
            lines += sub.adapt_positions(state, f"{name}." if name else "")
    return lines
