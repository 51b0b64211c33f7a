"""Caption generation for captioners and CoCa: greedy, beam search, and top-k / top-p sampling.

The model needs ``image_context(images)`` and a :class:`~vislang.models.text.decoder.TextDecoder`
as ``decoder``. With ``use_cache`` each step feeds only the newest token and reuses every
block's keys and values (cross-attention keys of the image are computed once); without it each
step re-runs the whole prefix. Both give the same tokens; the cache is what makes long
captions affordable (see BENCHMARKS.md).

Output rows are ``<sot> tokens... <eot> <pad>...`` of length ``max_length``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from vislang.models.text.decoder import reorder_cache


@dataclass(frozen=True)
class GenerationConfig:
    method: Literal["greedy", "beam", "sample"] = "greedy"
    max_length: int | None = None  # tokens including <sot> and <eot>; default: the decoder's context
    min_length: int = 0  # <eot> is forbidden before this many tokens
    beam_size: int = 4
    length_penalty: float = 1.0  # beam score = log-likelihood / length ** length_penalty
    temperature: float = 1.0
    top_k: int = 0  # sample among the k most likely tokens (0: all)
    top_p: float = 1.0  # sample among the smallest set holding this much probability
    use_cache: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("greedy", "beam", "sample"):
            raise ValueError(f"unknown generation method {self.method!r}; choose greedy, beam or sample")
        if self.beam_size < 1 or self.temperature <= 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError(
                f"invalid generation settings: beam_size {self.beam_size}, temperature {self.temperature}, "
                f"top_k {self.top_k}, top_p {self.top_p}"
            )


class _Stepper:
    """Next-token log-probabilities for a growing batch of prefixes, with or without a cache."""

    def __init__(self, decoder, context: torch.Tensor, use_cache: bool) -> None:
        self.decoder, self.context, self.use_cache = decoder, context, use_cache
        self.cache: dict = {}

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.use_cache:
            logits = self.decoder.step(tokens[:, -1:], self.context, self.cache, tokens.shape[1] - 1)
        else:
            logits = self.decoder(tokens, self.context)[0]
        return logits[:, -1].float().log_softmax(dim=-1)

    def reorder(self, index: torch.Tensor) -> None:
        self.context = self.context.index_select(0, index)
        if self.use_cache:
            reorder_cache(self.cache, index)


def _filter(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set to -inf everything outside the top-k and outside the top-p nucleus."""
    if top_k:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the tokens ranked above it already hold top_p of the probability
        drop = probs.cumsum(dim=-1) - probs >= top_p
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return logits


@torch.no_grad()
def generate(
    model, images: torch.Tensor, sot_id: int, eot_id: int, pad_id: int, config: GenerationConfig = GenerationConfig()
) -> torch.Tensor:
    """Captions for a batch of preprocessed images: LongTensor [B, max_length]."""
    decoder = model.decoder
    max_length = min(config.max_length or decoder.context_length, decoder.context_length)
    context = model.image_context(images)
    if config.method == "beam":
        return _beam_search(decoder, context, sot_id, eot_id, pad_id, max_length, config)
    generator = torch.Generator(device=images.device).manual_seed(config.seed)
    step = _Stepper(decoder, context, config.use_cache)
    b = len(images)
    tokens = torch.full((b, 1), sot_id, dtype=torch.long, device=images.device)
    done = torch.zeros(b, dtype=torch.bool, device=images.device)
    while tokens.shape[1] < max_length and not done.all():
        log_probs = step(tokens)
        if tokens.shape[1] + 1 < config.min_length:
            log_probs[:, eot_id] = float("-inf")
        if tokens.shape[1] + 1 == max_length:  # the last slot is always <eot>
            next_token = torch.full((b,), eot_id, device=images.device)
        elif config.method == "greedy":
            next_token = log_probs.argmax(dim=-1)
        else:
            logits = _filter(log_probs / config.temperature, config.top_k, config.top_p)
            next_token = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)[:, 0]
        next_token = torch.where(done, pad_id, next_token)
        tokens = torch.cat([tokens, next_token[:, None]], dim=1)
        done |= next_token == eot_id
    return _pad(tokens, max_length, pad_id)


def _pad(tokens: torch.Tensor, length: int, pad_id: int) -> torch.Tensor:
    out = torch.full((tokens.shape[0], length), pad_id, dtype=torch.long, device=tokens.device)
    out[:, : tokens.shape[1]] = tokens
    return out


def _beam_search(
    decoder, context: torch.Tensor, sot_id: int, eot_id: int, pad_id: int, max_length: int, config: GenerationConfig
) -> torch.Tensor:
    b, k, device = context.shape[0], config.beam_size, context.device
    step = _Stepper(decoder, context.repeat_interleave(k, dim=0), config.use_cache)
    tokens = torch.full((b * k, 1), sot_id, dtype=torch.long, device=device)
    scores = torch.full((b, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first
    lengths = torch.ones(b * k, device=device)
    done = torch.zeros(b * k, dtype=torch.bool, device=device)
    while tokens.shape[1] < max_length and not done.all():
        log_probs = step(tokens)  # [b * k, V]
        if tokens.shape[1] + 1 < config.min_length:
            log_probs[:, eot_id] = float("-inf")
        if tokens.shape[1] + 1 == max_length:  # the last slot is <eot>, at its real cost
            only_eot = torch.ones_like(log_probs, dtype=torch.bool)
            only_eot[:, eot_id] = False
            log_probs = log_probs.masked_fill(only_eot, float("-inf"))
        # a finished beam can only continue with <pad>, at no cost
        finished = torch.full_like(log_probs, float("-inf"))
        finished[:, pad_id] = 0.0
        log_probs = torch.where(done[:, None], finished, log_probs)
        vocab = log_probs.shape[-1]
        candidates = (scores.view(b * k, 1) + log_probs).view(b, k * vocab)
        scores, flat = candidates.topk(k, dim=1)
        beam = (flat // vocab + torch.arange(b, device=device)[:, None] * k).view(-1)
        next_token = (flat % vocab).view(-1)
        step.reorder(beam)
        tokens = torch.cat([tokens.index_select(0, beam), next_token[:, None]], dim=1)
        was_done = done.index_select(0, beam)
        lengths = lengths.index_select(0, beam) + (~was_done).float()
        done = was_done | (next_token == eot_id)
    normalised = scores.view(-1) / lengths**config.length_penalty
    best = normalised.view(b, k).argmax(dim=1) + torch.arange(b, device=device) * k
    return _pad(tokens.index_select(0, best), max_length, pad_id)
