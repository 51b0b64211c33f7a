"""Autoregressive text decoder shared by the captioners (Cap, CapPa) and CoCa.

tokens -> embedding + position -> ``unimodal`` blocks (causal self-attention only: CoCa's text
tower; none for Cap) -> ``multimodal`` blocks (causal self-attention, then cross-attention to
the image context) -> LayerNorm -> vocabulary logits.

Two extras:
- CapPa's parallel prediction: rows flagged ``parallel`` get the learned ``[MASK]`` embedding
  at every input position and attend without a causal mask, so each caption token is
  predicted from the image alone.
- CoCa's text embedding: with ``cls_token`` a learned CLS embedding is appended after the
  tokens; it attends to every real (non-pad) token in the unimodal blocks and its output is the
  contrastive text feature. The CLS always sits at position ``context_length``.

``step`` decodes incrementally with a key–value cache (the caller owns the cache dict).
:func:`split_lm_state` / :func:`load_split` start such a decoder from a text-only one (CONCH).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vislang.models.layers import Block
from vislang.models.text.transformer import real_tokens

NEG_INF = float("-inf")


class TextDecoder(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        context_length: int,
        width: int,
        heads: int,
        mlp_ratio: float,
        unimodal_depth: int,
        multimodal_depth: int,
        pad_id: int = 0,
        cls_token: bool = False,
        attn_impl: str = "auto",
    ) -> None:
        super().__init__()
        self.context_length, self.pad_id = context_length, pad_id
        self.token_embed = nn.Embedding(vocab_size, width)
        self.pos_embed = nn.Parameter(torch.randn(1, context_length + 1, width) * 0.01)
        self.mask_embed = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.unimodal = nn.ModuleList(Block(width, heads, mlp_ratio, attn_impl) for _ in range(unimodal_depth))
        self.multimodal = nn.ModuleList(
            Block(width, heads, mlp_ratio, attn_impl, cross=True) for _ in range(multimodal_depth)
        )
        self.cls_embed = nn.Parameter(torch.randn(1, 1, width) * 0.02) if cls_token else None
        self.ln_cls = nn.LayerNorm(width) if cls_token else None
        self.ln_final = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size, bias=False)
        self.grad_checkpointing = False
        nn.init.normal_(self.token_embed.weight, std=0.02)

    # -- masks ----------------------------------------------------------------------------------
    @staticmethod
    def causal_mask(length: int, start: int = 0, device: torch.device | None = None) -> torch.Tensor:
        """Additive [1, 1, length, start + length] mask: query i (at start + i) sees keys <= start + i."""
        keys = torch.arange(start + length, device=device)
        queries = torch.arange(start, start + length, device=device)
        return torch.zeros(length, start + length, device=device).masked_fill(
            keys[None, :] > queries[:, None], NEG_INF
        )[None, None]

    def _self_mask(self, tokens: torch.Tensor, parallel: torch.Tensor | None, with_cls: bool) -> torch.Tensor:
        """[B or 1, 1, L', L'] for the full-sequence pass (L' = L + 1 with the CLS)."""
        b, length = tokens.shape
        mask = self.causal_mask(length + with_cls, device=tokens.device)
        if with_cls:  # the CLS row sees every real token and itself
            row = torch.zeros(b, length + 1, device=tokens.device)
            row[:, :length] = row[:, :length].masked_fill(~real_tokens(tokens, self.pad_id), NEG_INF)
            mask = mask.expand(b, -1, -1, -1).clone()
            mask[:, 0, length] = row
        if parallel is not None and parallel.any():
            mask = mask.expand(b, -1, -1, -1).clone()
            mask[parallel] = 0.0
        return mask

    # -- full-sequence passes (training and scoring) ----------------------------------------------
    def _run(self, blocks: nn.ModuleList, x: torch.Tensor, mask: torch.Tensor, context=None) -> torch.Tensor:
        for block in blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, mask, context, use_reentrant=False)
            else:
                x = block(x, mask, context)
        return x

    def embed(self, tokens: torch.Tensor, parallel: torch.Tensor | None = None, start: int = 0) -> torch.Tensor:
        length = tokens.shape[1]
        if start + length > self.context_length:
            raise ValueError(f"got {start + length} tokens, the context length is {self.context_length}")
        x = self.token_embed(tokens)
        if parallel is not None:
            x = torch.where(parallel[:, None, None], self.mask_embed.to(x.dtype), x)
        return x + self.pos_embed[:, start : start + length].to(x.dtype)

    def _unimodal(
        self, tokens: torch.Tensor, parallel: torch.Tensor | None, with_cls: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.embed(tokens, parallel)
        if with_cls:
            cls = (self.cls_embed + self.pos_embed[:, self.context_length :]).to(x.dtype)
            x = torch.cat([x, cls.expand(x.shape[0], -1, -1)], dim=1)
        mask = self._self_mask(tokens, parallel, with_cls)
        x = self._run(self.unimodal, x, mask)
        if with_cls:
            return x[:, :-1], self.ln_cls(x[:, -1])
        return x, None

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """CoCa's text feature: the CLS output of the unimodal blocks, [B, width]."""
        if self.cls_embed is None:
            raise ValueError("this decoder has no CLS token (cls_token=False)")
        return self._unimodal(tokens, None, True)[1]

    def forward(
        self,
        tokens: torch.Tensor,
        context: torch.Tensor,
        parallel: torch.Tensor | None = None,
        with_cls: bool = False,
        predict: slice = slice(None),
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits [B, L', vocab] for the positions ``predict`` selects, and the CLS feature if asked.

        Position i predicts token i + 1 (teacher forcing); in ``parallel`` rows every position
        sees the whole (masked) sequence.
        """
        x, cls = self._unimodal(tokens, parallel, with_cls)
        x = x[:, predict]
        mask = self._self_mask(tokens[:, predict], parallel, False)
        x = self._run(self.multimodal, x, mask, context)
        return self.head(self.ln_final(x)), cls

    # -- incremental decoding ---------------------------------------------------------------------
    def step(self, tokens: torch.Tensor, context: torch.Tensor, cache: dict, start: int) -> torch.Tensor:
        """Logits [B, n, vocab] of ``n`` new tokens at positions ``start..start+n-1``.

        ``cache`` starts as ``{}``; it keeps every block's keys and values, so each call costs
        only the new tokens. Reorder it with :func:`reorder_cache` when beams are re-ranked.
        """
        x = self.embed(tokens, None, start)
        mask = self.causal_mask(tokens.shape[1], start, tokens.device) if tokens.shape[1] > 1 else None
        caches = cache.setdefault("blocks", [{} for _ in range(len(self.unimodal) + len(self.multimodal))])
        for block, block_cache in zip(self.unimodal, caches):
            x = block(x, mask, None, block_cache)
        for block, block_cache in zip(self.multimodal, caches[len(self.unimodal) :]):
            x = block(x, mask, context, block_cache)
        return self.head(self.ln_final(x))


def lm_depth(lm_state: dict[str, torch.Tensor]) -> int:
    """Blocks of a text-only decoder's state dict (keys ``unimodal.<i>.``)."""
    indices = {int(k.split(".")[1]) for k in lm_state if k.startswith("unimodal.")}
    return max(indices) + 1 if indices else 0


def split_lm_state(
    lm_state: dict[str, torch.Tensor], unimodal_depth: int, multimodal_depth: int
) -> dict[str, torch.Tensor]:
    """A text-only decoder's weights (an ``lm`` run's, keys as in its ``state_dict``) renamed for a
    decoder of ``unimodal_depth`` text-only blocks then ``multimodal_depth`` multimodal ones
    (CONCH's split language model): lm block i < ``unimodal_depth`` becomes ``unimodal.i``, the
    others ``multimodal.(i - unimodal_depth)``, whose self-attention, norms and MLP they fill;
    the multimodal blocks' cross-attention (``ln_cross``, ``cross_attn``) has no source and stays
    as initialised. Token embedding, positions, mask embedding, final norm and head keep their
    names. Raises ValueError when the depths do not add up to the lm's."""
    if any(k.startswith("multimodal.") for k in lm_state):
        raise ValueError("the source has multimodal blocks: split_from takes a text-only decoder (an lm run)")
    depth = lm_depth(lm_state)
    if depth != unimodal_depth + multimodal_depth:
        raise ValueError(
            f"the lm has {depth} blocks, but the unimodal ({unimodal_depth}) and multimodal ({multimodal_depth}) "
            f"depths add up to {unimodal_depth + multimodal_depth}"
        )
    out = {}
    for key, value in lm_state.items():
        if not key.startswith("unimodal."):
            out[key] = value
            continue
        _, index, rest = key.split(".", 2)
        i = int(index)
        out[f"unimodal.{i}.{rest}" if i < unimodal_depth else f"multimodal.{i - unimodal_depth}.{rest}"] = value
    return out


def load_split(decoder: TextDecoder, lm_state: dict[str, torch.Tensor]) -> list[str]:
    """Load an lm's weights into ``decoder`` by :func:`split_lm_state`; returns the names loaded.
    A tensor of another shape (width, vocabulary, context length) is a ValueError naming it."""
    mapped = split_lm_state(lm_state, len(decoder.unimodal), len(decoder.multimodal))
    own = decoder.state_dict()
    unknown = [k for k in mapped if k not in own]
    if unknown:
        raise ValueError(f"the lm's tensor {unknown[0]} has no place in this decoder")
    for name, value in mapped.items():
        if value.shape != own[name].shape:
            raise ValueError(
                f"the lm's {name} has shape {tuple(value.shape)}, this decoder needs {tuple(own[name].shape)}"
            )
    decoder.load_state_dict(mapped, strict=False)
    return list(mapped)


def reorder_cache(cache: dict, index: torch.Tensor) -> None:
    """Select rows ``index`` of every cached key/value tensor (beam search re-ranking)."""
    for block_cache in cache.get("blocks", []):
        for part in block_cache.values():
            for name in ("k", "v"):
                if name in part:
                    part[name] = part[name].index_select(0, index)
