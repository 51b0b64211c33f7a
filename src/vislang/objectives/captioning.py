"""Captioning objectives: Cap (teacher-forced next-token prediction) and CapPa (Tschannen et al.
2023: a share of examples predicts every token at once from all-[MASK] inputs).

For evaluation a captioner scores a text by its log-likelihood given the image, as CapPa
evaluates zero-shot classification: the class whose prompts are most likely wins (prompt
templates are averaged in log-likelihood). Text "features" are therefore the token ids
themselves, [M, K, L] with K prompts per text, and ``scores`` runs the decoder on every
image–text pair, in chunks of ``score_chunk`` pairs.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from vislang.classes import ClassTask
from vislang.config import ModelConfig, Section
from vislang.losses import full_precision
from vislang.models.text.decoder import TextDecoder
from vislang.models.text.transformer import real_tokens
from vislang.objectives.base import Objective, ObjectiveConfig
from vislang.objectives.towers import build_captioner


class DecoderConfig(Section):
    """The captioner's text decoder; it shares ``model.text``'s width, heads, MLP ratio and context."""

    depth: int = Field(2, ge=1, description="multimodal blocks (causal self-attention + cross-attention to the image)")


class CapConfig(ObjectiveConfig):
    """Cap: image encoder + text decoder trained by teacher-forced next-token prediction."""

    stage_inputs: ClassVar[frozenset[str]] = frozenset(
        {"image_size"}
    )  # the caption decoder's positions keep their length

    kind: Literal["cap"] = Field("cap", description="the objective")
    decoder: DecoderConfig = Field(DecoderConfig(), description="the text decoder")

    def build(
        self, model: ModelConfig, vocab_size: int, pad_id: int, classes: ClassTask | None = None
    ) -> CaptioningObjective:
        return CaptioningObjective(build_captioner(model, self.decoder.depth, vocab_size, pad_id), pad_id, 0.0)


class CappaConfig(CapConfig):
    """CapPa (Tschannen et al. 2023): Cap where a share of examples is predicted in parallel."""

    kind: Literal["cappa"] = Field("cappa", description="the objective")  # type: ignore[assignment]
    parallel_prob: float = Field(
        0.75,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="share of examples decoded in parallel from all-[MASK] inputs (big_vision's masked_pred_prob)",
    )

    def build(
        self, model: ModelConfig, vocab_size: int, pad_id: int, classes: ClassTask | None = None
    ) -> CaptioningObjective:
        captioner = build_captioner(model, self.decoder.depth, vocab_size, pad_id)
        return CaptioningObjective(captioner, pad_id, self.parallel_prob)


def caption_loss(logits: torch.Tensor, tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Mean next-token cross-entropy of ``tokens[:, 1:]`` over the targets that are not trailing
    padding, in fp32 (``logits`` from the inputs ``tokens[:, :-1]``)."""
    targets = tokens[:, 1:].masked_fill(~real_tokens(tokens, pad_id)[:, 1:], -100)
    return F.cross_entropy(full_precision(logits).flatten(0, 1), targets.flatten(), ignore_index=-100)


def sequence_log_likelihood(
    decoder: TextDecoder, context: torch.Tensor, tokens: torch.Tensor, pad_id: int
) -> torch.Tensor:
    """log p(tokens[1:] | tokens[0], context) summed over the non-pad tokens: [P] for P pairs.

    The end-of-text token is scored too, so a caption that stops early is not favoured.
    """
    logits = decoder(tokens[:, :-1], context)[0].float()
    targets = tokens[:, 1:]
    log_probs = logits.log_softmax(dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (log_probs * real_tokens(tokens, pad_id)[:, 1:]).sum(dim=1)


class GenerativeScoring(Objective):
    """Zero-shot, retrieval and probe scoring by caption log-likelihood (the model needs
    ``image_context`` and ``decoder``)."""

    pad_id: int
    score_chunk: int = 4096

    def captioner(self) -> nn.Module:
        return self.model

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.image_context(images)

    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, None, :]  # one "prompt" per text

    def ensemble_texts(self, text_features: torch.Tensor) -> torch.Tensor:
        # [T templates, C classes, 1, L] -> [C, T, L]: a class is scored by its mean over templates
        return text_features[:, :, 0].transpose(0, 1)

    def _pair_log_likelihood(self, contexts: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """log-likelihoods of P (context, tokens) pairs, ``score_chunk`` at a time: [P]."""
        out = [
            sequence_log_likelihood(
                self.model.decoder,
                contexts[i : i + self.score_chunk],
                tokens[i : i + self.score_chunk].long(),
                self.pad_id,
            )
            for i in range(0, len(tokens), self.score_chunk)
        ]
        return torch.cat(out)

    def scores(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """[N images] x [M texts, K prompts, L] -> [N, M] mean log-likelihood over the K prompts."""
        n, (m, k, length) = image_features.shape[0], text_features.shape
        texts = text_features.reshape(m * k, length)
        rows = []
        per_step = max(1, self.score_chunk // (m * k))
        for start in range(0, n, per_step):
            images = image_features[start : start + per_step]
            contexts = images.repeat_interleave(m * k, dim=0)
            tokens = texts.repeat(len(images), 1)
            rows.append(self._pair_log_likelihood(contexts, tokens).view(len(images), m, k).mean(dim=2))
        return torch.cat(rows)

    def pair_scores(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """[N] x [N, K candidates, 1, L] -> [N, K]: each image against its own candidates only."""
        n, k = text_features.shape[:2]
        contexts = image_features.repeat_interleave(k, dim=0)
        return self._pair_log_likelihood(contexts, text_features[:, :, 0].reshape(n * k, -1)).view(n, k)


class CaptioningObjective(GenerativeScoring):
    """Cap (``parallel_prob=0``) and CapPa (``parallel_prob>0``, big_vision default 0.75)."""

    def __init__(self, model, pad_id: int, parallel_prob: float = 0.0) -> None:
        super().__init__()
        self.model, self.pad_id, self.parallel_prob = model, pad_id, parallel_prob

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tokens = batch["text"]
        inputs = tokens[:, :-1]
        parallel = None
        if self.parallel_prob > 0:
            parallel = torch.rand(len(tokens), device=tokens.device) < self.parallel_prob
        loss = caption_loss(self.model(batch["image"], inputs, parallel), tokens, self.pad_id)
        parts = {"loss": loss, "caption": loss.detach()}
        if parallel is not None:
            parts["parallel_share"] = parallel.float().mean()
        return parts
