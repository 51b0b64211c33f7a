"""CoOp (Zhou et al. 2022, "Learning to Prompt for Vision-Language Models"): the prompt words
before the class name are replaced by learned vectors, the only weights that train.

Each class's text is ``<sot> X X ... X {classname}. <eot>``; the token embeddings of the ``X``
positions are the context vectors (one set shared by every class, or one per class: CoOp's
class-specific context), and the rest of the text tower runs as for any text. The loss is the
cross-entropy of the frozen logit scale times the cosine similarity of each image to every
class's text. Both towers and the scale stay frozen, so the zero-shot evaluators (which see
:meth:`image_features` / :meth:`text_features`, the plain towers) measure the starting model,
while the head task (:meth:`classify`) measures the learned prompts.

The class prompt tokens and where each context vector goes are persistent buffers, written once
by :meth:`CoopObjective.start` from the run's tokenizer: a checkpoint or export rebuilt from its
config and class list gets them back with the weights, without the tokenizer being consulted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn

from vislang.classes import ClassTask
from vislang.config import ModelConfig, ParamRule, TrainConfig
from vislang.errors import ConfigError
from vislang.models.text.transformer import TextTransformer, real_tokens
from vislang.models.two_tower import TwoTower
from vislang.objectives.base import ObjectiveConfig, StartContext
from vislang.objectives.contrastive import EmbeddingObjective
from vislang.objectives.towers import build_two_tower

Tokenize = Callable[[Sequence[str]], torch.Tensor]
PLACEHOLDER = "X"  # the word written at the context positions (its embedding is never read)


class CoopConfig(ObjectiveConfig):
    """Learned prompt context on frozen towers (CoOp), trained with cross-entropy over the classes."""

    stage_inputs: ClassVar[frozenset[str]] = frozenset({"image_size"})  # the prompts are tokenized once, at the start

    kind: Literal["coop"] = Field("coop", description="the objective")
    n_ctx: int = Field(
        4,
        ge=1,
        description="context vectors before the class name; with init it must be init's token count "
        "(default then: init's word count, else 4)",
    )
    init: str | None = Field(
        None,
        description="words whose token embeddings start the context (e.g. 'a photo of a'); null: N(0, 0.02) vectors",
    )
    class_specific: bool = Field(
        False, description="one context per class (CoOp's CSC) instead of one shared by every class"
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, allow_inf_nan=False, description="of the cross-entropy")

    contrastive: ClassVar[bool] = True  # the towers are scored (zero-shot) by cosine similarity
    needs_labels: ClassVar[bool] = True
    needs_classes: ClassVar[bool] = True

    @model_validator(mode="before")
    @classmethod
    def _n_ctx_from_init(cls, data: Any) -> Any:
        # CoOp's own rule (n_ctx = the init's word count) when n_ctx is not given; the saved
        # config then holds the number, so a restore builds a context of the trained size.
        if isinstance(data, dict) and isinstance(data.get("init"), str) and data.get("n_ctx") is None:
            data = {**data, "n_ctx": max(1, len(data["init"].split()))}
        return data

    @field_validator("init")
    @classmethod
    def _init_words(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("init: empty; give the words that start the context, or null")
        return value

    def check(self, model: ModelConfig, train: TrainConfig) -> None:
        if model.text.pretrained:
            raise ValueError(
                "model.text.pretrained: CoOp writes its context into the token embeddings of vislang's text "
                "transformer; a Hugging Face text tower has no such hook"
            )
        if train.lora is not None:
            raise ValueError("train.lora: CoOp trains its context alone (the towers stay frozen); leave LoRA unset")

    def param_rules(self) -> list[ParamRule]:
        return [ParamRule(match=r"^model\.", freeze=True)]  # both towers and the logit scale

    def build(
        self, model: ModelConfig, vocab_size: int, pad_id: int, classes: ClassTask | None = None
    ) -> CoopObjective:
        assert classes is not None  # build_objective refuses an objective that needs classes without them
        return CoopObjective(build_two_tower(model, vocab_size, pad_id), classes, self)


def content_ids(tokens: torch.Tensor, pad_id: int, n_start: int) -> list[int]:
    """The ids of a tokenized text [L] between its start tokens and its end-of-text token."""
    length = int(real_tokens(tokens[None], pad_id).sum())
    return tokens[n_start : length - 1].tolist()


class CoopObjective(EmbeddingObjective):
    """Frozen two-tower model, ``context`` ([n_ctx, width], or [classes, n_ctx, width] per class)
    and the class prompts as buffers: ``prompt_tokens`` [classes, context_length] and
    ``context_index`` (the same shape: which context vector replaces the token embedding at each
    position, counted over ``context`` flattened to [-1, width]; -1 keeps the token's own)."""

    set_by_start = ("context", "prompt_tokens", "context_index")

    def __init__(self, model: TwoTower, classes: ClassTask, config: CoopConfig) -> None:
        super().__init__(model, None)
        if not isinstance(model.text, TextTransformer):
            raise ConfigError("objective coop: the text tower must be vislang's text transformer")
        self.classes, self.config = classes, config
        width, length = model.text.token_embed.embedding_dim, model.text.context_length
        shape = (len(classes), config.n_ctx, width) if config.class_specific else (config.n_ctx, width)
        self.context = nn.Parameter(torch.empty(shape))
        nn.init.normal_(self.context, std=0.02)
        # zeros until start() writes them; a restore loads them with the weights
        self.register_buffer("prompt_tokens", torch.zeros(len(classes), length, dtype=torch.long))
        self.register_buffer("context_index", torch.full((len(classes), length), -1, dtype=torch.long))

    # -- the learned prompts -----------------------------------------------------------------

    def class_features(self) -> torch.Tensor:
        """Normalised text features of every class's prompt with the context in place: [C, D]."""
        text = self.model.text
        index = self.context_index
        words = text.token_embed(self.prompt_tokens)
        vectors = self.context.reshape(-1, self.context.shape[-1])[index.clamp(min=0)].to(words.dtype)
        embeddings = torch.where((index >= 0).unsqueeze(-1), vectors, words)
        return F.normalize(text.forward_embeddings(embeddings, self.prompt_tokens), dim=-1)

    def logits(self, image_features: torch.Tensor, class_features: torch.Tensor) -> torch.Tensor:
        """Scale times cosine similarity [N, C], in fp32 whatever the autocast."""
        with torch.autocast(class_features.device.type, enabled=False):
            image = image_features.to(class_features.device).float()
            return self.model.scale().float() * image @ class_features.float().T

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.logits(self.model.encode_image(batch["image"]), self.class_features())
        loss = F.cross_entropy(logits, batch["label"], label_smoothing=self.config.label_smoothing)
        return {"loss": loss, "ce": loss.detach()}

    def classify(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.logits(image_features, self.class_features())

    # -- the start of a fresh run ----------------------------------------------------------------

    def prompts(self, tokenize: Tokenize) -> tuple[torch.Tensor, torch.Tensor, list[int] | None]:
        """(prompt tokens, context index, the init words' ids) written with the run's tokenizer.

        Each class's ids are assembled from pieces (the start tokens, n_ctx placeholders, the
        class name with CoOp's full stop, the end-of-text token) rather than read off one
        tokenized string: a placeholder word may be several tokens, and a byte-level BPE writes a
        word the same alone as inside a sentence, so the pieces are the sentence's tokens."""
        cfg, pad = self.config, self.model.text.pad_id
        length, n = self.prompt_tokens.shape[1], cfg.n_ctx
        empty = tokenize([""])[0]
        n_start = int(real_tokens(empty[None], pad).sum()) - 1  # <sot> (or nothing) before <eot>
        start, eot = empty[:n_start].tolist(), int(empty[n_start])
        init = content_ids(tokenize([cfg.init])[0], pad, n_start) if cfg.init is not None else None
        if init is not None and len(init) != n:
            raise ConfigError(
                f"objective.init: {cfg.init!r} is {len(init)} tokens with this tokenizer, objective.n_ctx is {n}; "
                f"set objective.n_ctx: {len(init)}"
            )
        placeholder = init or content_ids(tokenize([PLACEHOLDER])[0], pad, n_start)[:1] * n
        names = tokenize([f"{name}." for name in self.classes.classnames])
        tokens = torch.full((len(names), length), pad, dtype=torch.long)
        index = torch.full((len(names), length), -1, dtype=torch.long)
        for c, row in enumerate(names):
            ids = [*start, *placeholder, *content_ids(row, pad, n_start), eot]
            if len(ids) > length:
                raise ConfigError(
                    f"objective.n_ctx: {n} context vectors and the class name {self.classes.classnames[c]!r} "
                    f"do not fit model.text.context_length {length}"
                )
            tokens[c, : len(ids)] = torch.tensor(ids)
            first = c * n if cfg.class_specific else 0
            index[c, n_start : n_start + n] = torch.arange(first, first + n)
        return tokens, index, init

    @torch.no_grad()
    def start(self, context: StartContext) -> list[str]:
        """Write the class prompts and set the context (from ``init``'s embeddings or afresh), also
        over a context that ``train.init_from`` loaded: the config says how the prompt starts."""
        tokens, index, init = self.prompts(context.tokenize)
        self.prompt_tokens.copy_(tokens)
        self.context_index.copy_(index)
        if init is None:
            nn.init.normal_(self.context, std=0.02)
        else:
            words = self.model.text.token_embed.weight[torch.tensor(init, device=self.context.device)]
            self.context.copy_(words.expand_as(self.context))
        how = f"from {self.config.init!r}" if init is not None else "N(0, 0.02)"
        per = f"one per class ({len(self.classes)})" if self.config.class_specific else "shared by every class"
        return [f"CoOp: {self.config.n_ctx} context vectors, {how}, {per}; {len(self.classes)} class prompts"]


__all__ = ["CoopConfig", "CoopObjective"]
