"""CoCa objective: contrastive loss on the pooled embeddings plus captioning loss on the
decoder, weighted ``contrastive_weight`` and ``caption_weight`` (paper: 1 and 2). Zero-shot and
retrieval use the embeddings, as the paper does.

``decoder.split_from`` starts the decoder from a trained ``lm`` run (CONCH, Lu et al. 2024): its
first ``model.text.depth`` blocks become the unimodal text encoder, the others the multimodal
blocks' self-attention and MLP, with fresh cross-attention (:func:`~vislang.models.text.decoder.
split_lm_state`). It is applied once, by :meth:`CocaObjective.start`, on a fresh run."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from vislang.checkpoint import read_model
from vislang.classes import ClassTask
from vislang.config import ModelConfig
from vislang.errors import ConfigError
from vislang.losses import clip_loss
from vislang.models.coca import CoCa
from vislang.models.text.decoder import load_split
from vislang.objectives.base import ObjectiveConfig, StartContext
from vislang.objectives.captioning import DecoderConfig, caption_loss
from vislang.objectives.contrastive import EmbeddingObjective
from vislang.objectives.towers import build_coca
from vislang.tokenizers import BPETokenizer


class CocaDecoderConfig(DecoderConfig):
    """CoCa's decoder: ``model.text.depth`` unimodal blocks, then ``depth`` multimodal ones."""

    n_queries: int = Field(
        256,
        ge=1,
        description="the captioning pooler's learned queries over the image tokens, the decoder's context (paper: "
        "256; the contrastive pooler has one)",
    )
    split_from: str | None = Field(
        None,
        description="a trained lm run (directory or checkpoint) to split (CONCH): its first model.text.depth blocks "
        "become the unimodal text blocks, the rest the multimodal blocks' self-attention and MLP (cross-attention "
        "fresh); embeddings, positions, final norm and head copied. Its depth must equal model.text.depth + depth, "
        "its width, heads, MLP ratio and context length this model.text's, and the run must use its tokenizer "
        "(tokenizer.path: <lm run>/tokenizer.json)",
    )


class CocaConfig(ObjectiveConfig):
    """CoCa: contrastive loss on pooled embeddings plus captioning loss on the decoder."""

    stage_inputs: ClassVar[frozenset[str]] = frozenset(
        {"image_size"}
    )  # the multimodal decoder's positions keep their length

    kind: Literal["coca"] = Field("coca", description="the objective")
    contrastive_weight: float = Field(
        1.0, ge=0, allow_inf_nan=False, description="weight of the contrastive loss (paper: 1)"
    )
    caption_weight: float = Field(
        2.0, ge=0, allow_inf_nan=False, description="weight of the captioning loss (paper: 2)"
    )
    decoder: CocaDecoderConfig = Field(CocaDecoderConfig(), description="the text decoder")

    contrastive: ClassVar[bool] = True
    accepts_cit: ClassVar[bool] = True

    @model_validator(mode="after")
    def _some_weight(self) -> CocaConfig:
        if not self.contrastive_weight and not self.caption_weight:
            raise ValueError("contrastive_weight and caption_weight are both 0: nothing would be learned")
        return self

    def build(
        self, model: ModelConfig, vocab_size: int, pad_id: int, classes: ClassTask | None = None
    ) -> CocaObjective:
        coca = build_coca(model, self.decoder.depth, self.decoder.n_queries, vocab_size, pad_id)
        objective = CocaObjective(coca, pad_id, self.contrastive_weight, self.caption_weight)
        if self.decoder.split_from:
            text = model.text.model_dump(include=set(SPLIT_TEXT_FIELDS))
            objective.split_from = (self.decoder.split_from, text)
        return objective


# model.text fields an lm run split into CoCa's decoder must share with the CoCa run
SPLIT_TEXT_FIELDS = ("width", "heads", "mlp_ratio", "context_length")


def same_tokenizer(tokenize: Callable[[Sequence[str]], torch.Tensor], saved: str, context_length: int) -> bool:
    """Whether ``tokenize`` gives the ids the saved tokenizer (JSON) gives to every piece of its
    vocabulary: compared by what they do, so any tokenizer the run was given can be checked."""
    theirs = BPETokenizer.from_json(saved, context_length)
    pieces = [piece for piece in (theirs.decode([i]) for i in range(theirs.vocab_size)) if piece]
    return torch.equal(tokenize(pieces), theirs(pieces))


def check_split_source(state: dict, source: str, text: dict, tokenize: Callable[[Sequence[str]], torch.Tensor]) -> None:
    """Refuse an lm checkpoint whose blocks would not compute here: another objective, text
    shape or tokenizer (the ids it learned would mean other words). The depth is checked as the
    weights are mapped."""
    where = f"objective.decoder.split_from {source}"
    config = state.get("config") or {}
    kind = (config.get("objective") or {}).get("kind")
    if kind != "lm":
        raise ConfigError(f"{where}: an lm run is needed, this one trained objective {kind!r}")
    saved = (config.get("model") or {}).get("text") or {}
    for name in SPLIT_TEXT_FIELDS:
        if saved.get(name) != text[name]:
            raise ConfigError(f"{where}: model.text.{name} is {saved.get(name)!r} there, {text[name]!r} here")
    if "tokenizer" not in state or not same_tokenizer(tokenize, state["tokenizer"], text["context_length"]):
        raise ConfigError(
            f"{where}: this run's tokenizer is not the lm's (set tokenizer.path: <lm run>/tokenizer.json)"
        )


class CocaObjective(EmbeddingObjective):
    def __init__(self, model: CoCa, pad_id: int, contrastive_weight: float = 1.0, caption_weight: float = 2.0) -> None:
        super().__init__(model)
        self.pad_id, self.contrastive_weight, self.caption_weight = pad_id, contrastive_weight, caption_weight
        self.split_from: tuple[str, dict] | None = None  # (lm run, this model.text's shape fields)

    def start(self, context: StartContext) -> list[str]:
        """Split the lm run of ``decoder.split_from`` into the decoder (fresh runs only)."""
        if self.split_from is None:
            return []
        source, text = self.split_from
        state = read_model(source)
        check_split_source(state, source, text, context.tokenize)
        prefix = "model."
        lm = {k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)}
        decoder = self.model.decoder
        try:
            loaded = load_split(decoder, lm)
        except ValueError as error:
            raise ConfigError(f"objective.decoder.split_from {source}: {error}") from None
        u, m = len(decoder.unimodal), len(decoder.multimodal)
        return [
            f"decoder split from {source}: {len(loaded)} tensors; lm blocks 0-{u - 1} -> unimodal, "
            f"{u}-{u + m - 1} -> multimodal (cross-attention fresh)"
        ]

    def captioner(self) -> nn.Module:
        return self.model

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tokens = batch["text"]
        image, text, logits = self.model(batch["image"], tokens)
        contrastive = clip_loss(image, text, self.model.scale(), group=self.group)
        caption = caption_loss(logits, tokens, self.pad_id)
        loss = self.contrastive_weight * contrastive + self.caption_weight * caption
        return {"loss": loss, "contrastive": contrastive.detach(), "caption": caption.detach()}
