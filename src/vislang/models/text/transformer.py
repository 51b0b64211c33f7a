"""Text transformer tower.

Causal (CLIP: the feature is the output at the end-of-text token) or bidirectional with a
padding mask (SigLIP-style: pool the last real token or the mean of real tokens), or without
one (SigLIP's released models: every position attends to the padding and the feature is the
output at the context's final position). Tokens are
[B, context_length] with ``pad_id`` after the end-of-text token.
"""

from __future__ import annotations

import torch
from torch import nn

from vislang.models.layers import Transformer
from vislang.models.positions import resize_sequence


def real_tokens(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Bool [B, L]: positions up to the last non-padding token (the end-of-text token). Padding is
    only what trails the text: with OpenAI's vocabulary the padding id 0 is also "!", which may
    occur inside a caption."""
    length = tokens.shape[1]
    filled = (tokens != pad_id).flip(1).cummax(dim=1).values.flip(1)  # True up to the last non-pad
    return filled | (torch.arange(length, device=tokens.device) == 0)


def set_context_length(module: nn.Module, context_length: int) -> list[str]:
    """Resize, in place, the positions of every text transformer in ``module`` to
    ``context_length``; returns the log lines of what changed."""
    lines = []
    for tower in module.modules():
        if isinstance(tower, TextTransformer):
            lines += tower.set_context_length(context_length)
    return lines


class TextTransformer(nn.Module):
    """Text tower. Arguments are plain values (the ``model.text`` fields of the same names, mapped
    by :mod:`vislang.objectives.towers`), so the model layer needs no config types."""

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        pad_id: int = 0,
        *,
        context_length: int = 18,
        width: int = 64,
        depth: int = 2,
        heads: int = 2,
        mlp_ratio: float = 2.0,
        causal: bool = True,
        pool: str = "eot",
        mask_padding: bool = True,
        proj_bias: bool = False,
        act: str = "gelu",
        norm_eps: float = 1e-5,
        grad_checkpointing: bool = False,
        attn_impl: str = "auto",
    ) -> None:
        super().__init__()
        self.pad_id, self.context_length, self.causal = pad_id, context_length, causal
        self.pooling, self.mask_padding = pool, mask_padding
        self.token_embed = nn.Embedding(vocab_size, width)
        self.pos_embed = nn.Parameter(torch.randn(1, context_length, width) * 0.01)
        self.transformer = Transformer(width, depth, heads, mlp_ratio, attn_impl, act, norm_eps)
        self.transformer.grad_checkpointing = grad_checkpointing
        self.ln_final = nn.LayerNorm(width, eps=norm_eps)
        self.proj = nn.Linear(width, embed_dim, bias=proj_bias)
        causal_mask = torch.full((context_length, context_length), float("-inf")).triu(1)
        self.register_buffer("causal_mask", causal_mask, persistent=False)
        nn.init.normal_(self.token_embed.weight, std=0.02)

    def set_context_length(self, context_length: int) -> list[str]:
        """Take ``context_length`` tokens from now on: the positions truncated or linearly resized
        in place (:func:`vislang.models.positions.resize_sequence`; the same Parameter, so an
        optimizer holding it keeps it) and the causal mask rebuilt."""
        old = self.context_length
        if context_length == old:
            return []
        with torch.no_grad():
            self.pos_embed.data = resize_sequence(self.pos_embed.data, context_length)
        mask = torch.full((context_length, context_length), float("-inf"), device=self.causal_mask.device).triu(1)
        self.causal_mask, self.context_length = mask, context_length
        how = "truncated" if context_length < old else "interpolated"
        return [f"text positions {how} from {old} to {context_length}"]

    def adapt_positions(self, state: dict[str, torch.Tensor], prefix: str = "") -> list[str]:
        """Resize the position embedding in ``state`` (``prefix + "pos_embed"``) to this tower's
        context length (truncated when shorter, linear when longer)."""
        key = prefix + "pos_embed"
        saved = state.get(key)
        if saved is None or saved.ndim != 3 or saved.shape == self.pos_embed.shape:
            return []
        if saved.shape[-1] != self.pos_embed.shape[-1]:
            return []  # another width: load_matching names the mismatch
        state[key] = resize_sequence(saved, self.context_length)
        how = "truncated" if self.context_length < saved.shape[1] else "interpolated"
        return [f"{key}: text positions {how} from {saved.shape[1]} to {self.context_length}"]

    def attention_mask(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """Additive mask [B, 1, L, L]: causal, or hiding padding keys when bidirectional (none
        when the padding is attended to)."""
        length = tokens.shape[1]
        if self.causal:
            return self.causal_mask[:length, :length][None, None]
        if not self.mask_padding:
            return None
        pad = torch.zeros(tokens.shape, dtype=torch.float32, device=tokens.device)
        return pad.masked_fill(~real_tokens(tokens, self.pad_id), float("-inf"))[:, None, None, :]

    def tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-token outputs after the final norm: [B, L, width]."""
        return self.embedded_tokens(self.token_embed(tokens), tokens)

    def embedded_tokens(self, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """:meth:`tokens` from given token embeddings [B, L, width] instead of the lookup of
        ``tokens``, which still decide the mask and (in :meth:`pool`) where the text ends: learned
        prompt vectors (CoOp) take the place of some words' embeddings this way."""
        length = tokens.shape[1]
        if length > self.context_length:
            raise ValueError(f"got {length} tokens, the context length is {self.context_length}")
        x = embeddings + self.pos_embed[:, :length]
        return self.ln_final(self.transformer(x, self.attention_mask(tokens)))

    def pool(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        if self.pooling == "end":
            return x[:, -1]
        real = real_tokens(tokens, self.pad_id)
        if self.pooling in ("eot", "last"):  # the end-of-text token is the last real token
            last = real.sum(dim=1).clamp(min=1) - 1
            return x[torch.arange(x.shape[0], device=x.device), last]
        if self.pooling == "cls":
            return x[:, 0]
        weights = real.unsqueeze(-1).to(x.dtype)
        return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)

    def without_padding(self, tokens: torch.Tensor) -> torch.Tensor:
        """The batch cut after its longest text, where that is the same computation: a causal
        tower (or one that masks padding keys) never lets a real token see the padding, and
        every pooling but "end" reads real tokens only. Features then differ from the uncut
        batch's by float rounding only (about 1e-7). Evaluation encodes mostly short captions
        padded to the context length, so this skips most of the work."""
        if self.pooling == "end" or not (self.causal or self.mask_padding):
            return tokens
        longest = int(real_tokens(tokens, self.pad_id).sum(dim=1).max().item()) if len(tokens) else 1
        return tokens[:, : max(longest, 1)]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1] > self.context_length:
            raise ValueError(f"got {tokens.shape[1]} tokens, the context length is {self.context_length}")
        if not self.training:  # training keeps the full context (its numerics stay as they were)
            tokens = self.without_padding(tokens)
        return self.proj(self.pool(self.tokens(tokens), tokens))

    def forward_embeddings(self, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The projected feature of texts given as token embeddings [B, L, width] (``tokens``
        [B, L] say where the padding is): :meth:`forward` with the embedding lookup replaced, the
        same cut of the padding in evaluation included, so that the embeddings of ``tokens``
        themselves give exactly :meth:`forward`'s feature."""
        if tokens.shape[1] > self.context_length:
            raise ValueError(f"got {tokens.shape[1]} tokens, the context length is {self.context_length}")
        if embeddings.shape[:2] != tokens.shape:
            raise ValueError(f"embeddings of shape {tuple(embeddings.shape)} for tokens of shape {tuple(tokens.shape)}")
        if not self.training:
            tokens = self.without_padding(tokens)
            embeddings = embeddings[:, : tokens.shape[1]]
        return self.proj(self.pool(self.embedded_tokens(embeddings, tokens), tokens))
