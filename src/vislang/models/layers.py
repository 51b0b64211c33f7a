"""Transformer building blocks shared by the image and text towers (pre-norm, GELU MLP).

Attention has two implementations chosen by an explicit flag: PyTorch's fused
``scaled_dot_product_attention`` ("sdpa") and plain matmul–softmax–matmul ("math"). On CPUs
with bf16 matrix units the plain version trains tiny models faster (the fused kernel's bf16
backward dominates there); on CUDA the fused kernel wins. "auto" picks per device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, impl: str) -> torch.Tensor:
    """Multi-head attention on [B, H, L, Dh] tensors; ``mask`` is additive, broadcastable to [B, H, Lq, Lk]."""
    if impl == "auto":
        impl = "sdpa" if q.is_cuda else "math"
    if mask is not None:
        mask = mask.to(q.dtype)
    if impl == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores + mask
    return scores.softmax(dim=-1) @ v


class MultiheadAttention(nn.Module):
    """Self- or cross-attention with one fused input projection (the layout OpenCLIP and
    ``nn.MultiheadAttention`` use: rows are q, k, v), so self-attention is a single matmul."""

    def __init__(self, width: int, heads: int, attn_impl: str = "auto") -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads, self.attn_impl = heads, attn_impl
        self.in_proj = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        b, lq, d = x.shape
        if context is None:
            q, k, v = self.in_proj(x).view(b, lq, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        else:
            w, bias = self.in_proj.weight, self.in_proj.bias
            q = F.linear(x, w[:d], bias[:d]).view(b, lq, self.heads, -1).transpose(1, 2)
            kv = F.linear(context, w[d:], bias[d:]).view(b, context.shape[1], 2, self.heads, -1)
            k, v = kv.permute(2, 0, 3, 1, 4)
        y = attention(q, k, v, mask, self.attn_impl)
        return self.out_proj(y.transpose(1, 2).reshape(b, lq, d))


class Mlp(nn.Sequential):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, attn_impl: str = "auto") -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = MultiheadAttention(width, heads, attn_impl)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask=mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of blocks; ``grad_checkpointing`` recomputes each block in the backward pass."""

    def __init__(self, width: int, depth: int, heads: int, mlp_ratio: float, attn_impl: str = "auto") -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, attn_impl) for _ in range(depth))
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, mask, use_reentrant=False)
            else:
                x = block(x, mask)
        return x


class AttentionPool(nn.Module):
    """Multihead attention pooling (SigLIP's "MAP" head): learned queries attend over the tokens.

    With ``n_queries`` > 1 it returns [B, n_queries, width] (CoCa's decoder pooler); with one
    query, [B, width].
    """

    def __init__(
        self, width: int, heads: int, mlp_ratio: float = 4.0, n_queries: int = 1, attn_impl: str = "auto"
    ) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, n_queries, width) * width**-0.5)
        self.attn = MultiheadAttention(width, heads, attn_impl)
        self.ln = nn.LayerNorm(width)
        self.mlp = Mlp(width, int(width * mlp_ratio))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.attn(self.query.expand(tokens.shape[0], -1, -1).to(tokens.dtype), context=tokens)
        x = x + self.mlp(self.ln(x))
        return x[:, 0] if x.shape[1] == 1 else x
