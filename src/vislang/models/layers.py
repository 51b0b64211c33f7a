"""Transformer building blocks shared by the image and text towers (pre-norm, GELU MLP).

Attention has two implementations chosen by an explicit flag: PyTorch's fused
``scaled_dot_product_attention`` ("sdpa") and plain matmul–softmax–matmul ("math"). "auto"
follows measurements of a full training step (BENCHMARKS.md, ``bench/train_step_cpu.py``): the
fused kernel on accelerators; on a CPU the plain one, except for bf16/fp16 on a CPU without bf16
matrix units. With AMX the plain version trained a tiny CLIP 2.5x faster in bf16 (the fused
kernel's low-precision backward dominates there); on an AVX2 CPU it was 8% faster in fp32, while
in emulated bf16 the fused kernel was 7% faster.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vislang.hardware import this_cpu_has_bf16_units


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, impl: str) -> torch.Tensor:
    """Multi-head attention on [B, H, L, Dh] tensors; ``mask`` is additive, broadcastable to [B, H, Lq, Lk]."""
    if impl == "auto":
        emulated = q.dtype in (torch.bfloat16, torch.float16) and not this_cpu_has_bf16_units()
        impl = "sdpa" if q.device.type != "cpu" or emulated else "math"
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
    ``nn.MultiheadAttention`` use: rows are q, k, v), so self-attention is a single matmul.

    ``cache`` (a dict owned by the caller) makes incremental decoding cheap: self-attention
    appends this call's keys and values to the cached ones; cross-attention computes the
    context's keys and values once and reuses them.
    """

    def __init__(self, width: int, heads: int, attn_impl: str = "auto") -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads, self.attn_impl = heads, attn_impl
        self.in_proj = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)

    def _heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """[B, L, n * width] -> n tensors [B, H, L, Dh]."""
        b, length, width = x.shape
        return x.view(b, length, n, self.heads, width // (n * self.heads)).permute(2, 0, 3, 1, 4)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        cache: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        b, lq, d = x.shape
        if context is None:
            q, k, v = self._heads(self.in_proj(x), 3)
            if cache is not None:
                if "k" in cache:
                    k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
                cache["k"], cache["v"] = k, v
        else:
            w, bias = self.in_proj.weight, self.in_proj.bias
            q = self._heads(F.linear(x, w[:d], bias[:d]), 1)[0]
            if cache is not None and "k" in cache:
                k, v = cache["k"], cache["v"]
            else:
                k, v = self._heads(F.linear(context, w[d:], bias[d:]), 2)
                if cache is not None:
                    cache["k"], cache["v"] = k, v
        y = attention(q, k, v, mask, self.attn_impl)
        return self.out_proj(y.transpose(1, 2).reshape(b, lq, d))


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the activation OpenAI's original CLIP weights were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def activation(name: str) -> nn.Module:
    """The MLP activation named by a tower's ``act`` field."""
    if name == "gelu":
        return nn.GELU()
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if name == "quick_gelu":
        return QuickGELU()
    raise ValueError(f"unknown activation {name!r}")


class Mlp(nn.Sequential):
    def __init__(self, width: int, hidden: int, act: str = "gelu") -> None:
        super().__init__(nn.Linear(width, hidden), activation(act), nn.Linear(hidden, width))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), [x + cross_attn(ln(x), context)], x + mlp(ln(x)).

    With ``cross=True`` it is a decoder block that also attends to a context (image tokens).
    """

    def __init__(
        self,
        width: int,
        heads: int,
        mlp_ratio: float,
        attn_impl: str = "auto",
        cross: bool = False,
        act: str = "gelu",
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=norm_eps)
        self.attn = MultiheadAttention(width, heads, attn_impl)
        if cross:
            self.ln_cross = nn.LayerNorm(width, eps=norm_eps)
            self.cross_attn = MultiheadAttention(width, heads, attn_impl)
        self.ln_2 = nn.LayerNorm(width, eps=norm_eps)
        self.mlp = Mlp(width, int(width * mlp_ratio), act)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        cache: dict[str, dict[str, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask=mask, cache=None if cache is None else cache.setdefault("self", {}))
        if context is not None:
            cross_cache = None if cache is None else cache.setdefault("cross", {})
            x = x + self.cross_attn(self.ln_cross(x), context=context, cache=cross_cache)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of blocks; ``grad_checkpointing`` recomputes each block in the backward pass."""

    def __init__(
        self,
        width: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        attn_impl: str = "auto",
        act: str = "gelu",
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(width, heads, mlp_ratio, attn_impl, act=act, norm_eps=norm_eps) for _ in range(depth)
        )
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
        self,
        width: int,
        heads: int,
        mlp_ratio: float = 4.0,
        n_queries: int = 1,
        attn_impl: str = "auto",
        act: str = "gelu",
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, n_queries, width) * width**-0.5)
        self.attn = MultiheadAttention(width, heads, attn_impl)
        self.ln = nn.LayerNorm(width, eps=norm_eps)
        self.mlp = Mlp(width, int(width * mlp_ratio), act)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.attn(self.query.expand(tokens.shape[0], -1, -1).to(tokens.dtype), context=tokens)
        x = x + self.mlp(self.ln(x))
        return x[:, 0] if x.shape[1] == 1 else x
