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

from vislang.config import TextConfig
from vislang.models.layers import Transformer


def real_tokens(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Bool [B, L]: positions up to the last non-padding token (the end-of-text token). Padding is
    only what trails the text: with OpenAI's vocabulary the padding id 0 is also "!", which may
    occur inside a caption."""
    length = tokens.shape[1]
    filled = (tokens != pad_id).flip(1).cummax(dim=1).values.flip(1)  # True up to the last non-pad
    return filled | (torch.arange(length, device=tokens.device) == 0)


class TextTransformer(nn.Module):
    def __init__(
        self, cfg: TextConfig, vocab_size: int, embed_dim: int, pad_id: int = 0, attn_impl: str = "auto"
    ) -> None:
        super().__init__()
        self.cfg, self.pad_id = cfg, pad_id
        self.token_embed = nn.Embedding(vocab_size, cfg.width)
        self.pos_embed = nn.Parameter(torch.randn(1, cfg.context_length, cfg.width) * 0.01)
        self.transformer = Transformer(cfg.width, cfg.depth, cfg.heads, cfg.mlp_ratio, attn_impl, cfg.act, cfg.norm_eps)
        self.transformer.grad_checkpointing = cfg.grad_checkpointing
        self.ln_final = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.proj = nn.Linear(cfg.width, embed_dim, bias=cfg.proj_bias)
        causal = torch.full((cfg.context_length, cfg.context_length), float("-inf")).triu(1)
        self.register_buffer("causal_mask", causal, persistent=False)
        nn.init.normal_(self.token_embed.weight, std=0.02)

    def attention_mask(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """Additive mask [B, 1, L, L]: causal, or hiding padding keys when bidirectional (none
        when the padding is attended to)."""
        length = tokens.shape[1]
        if self.cfg.causal:
            return self.causal_mask[:length, :length][None, None]
        if not self.cfg.mask_padding:
            return None
        pad = torch.zeros(tokens.shape, dtype=torch.float32, device=tokens.device)
        return pad.masked_fill(~real_tokens(tokens, self.pad_id), float("-inf"))[:, None, None, :]

    def tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-token outputs after the final norm: [B, L, width]."""
        length = tokens.shape[1]
        if length > self.cfg.context_length:
            raise ValueError(f"got {length} tokens, the context length is {self.cfg.context_length}")
        x = self.token_embed(tokens) + self.pos_embed[:, :length]
        return self.ln_final(self.transformer(x, self.attention_mask(tokens)))

    def pool(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        if self.cfg.pool == "end":
            return x[:, -1]
        real = real_tokens(tokens, self.pad_id)
        if self.cfg.pool in ("eot", "last"):  # the end-of-text token is the last real token
            last = real.sum(dim=1).clamp(min=1) - 1
            return x[torch.arange(x.shape[0], device=x.device), last]
        if self.cfg.pool == "cls":
            return x[:, 0]
        weights = real.unsqueeze(-1).to(x.dtype)
        return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pool(self.tokens(tokens), tokens))
