"""LM objective: causal language modelling on texts alone, CONCH's unimodal text stage.

The model is a :class:`~vislang.models.text.decoder.TextDecoder` of ``depth`` text-only blocks
(the block class CoCa's decoder uses, without cross-attention), sized by ``model.text`` (width,
heads, MLP ratio, context length). A CoCa run takes it apart with ``objective.decoder.split_from``:
the first blocks become its unimodal text encoder, the rest its multimodal decoder's
self-attention and MLP parts. Images in the batch, if any, are ignored; a ``texts`` source gives
batches of tokens only.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from vislang.classes import ClassTask
from vislang.config import ModelConfig
from vislang.errors import ConfigError
from vislang.models.text.decoder import TextDecoder
from vislang.objectives.base import Objective, ObjectiveConfig
from vislang.objectives.captioning import caption_loss
from vislang.objectives.towers import build_decoder

NO_SCORING = "objective lm has no image tower: give its run eval.tasks: []"


class LmConfig(ObjectiveConfig):
    """LM: next-token prediction with a decoder-only text transformer."""

    stage_inputs: ClassVar[frozenset[str]] = frozenset()  # the decoder's positions keep their length

    kind: Literal["lm"] = Field("lm", description="the objective")
    depth: int = Field(
        4,
        ge=1,
        description="text-only causal blocks; a CoCa run split from this one needs model.text.depth + "
        "objective.decoder.depth equal to it",
    )

    def build(self, model: ModelConfig, vocab_size: int, pad_id: int, classes: ClassTask | None = None) -> LmObjective:
        return LmObjective(build_decoder(model, vocab_size, pad_id, 0, self.depth, False), pad_id)


class LmObjective(Objective):
    def __init__(self, model: TextDecoder, pad_id: int) -> None:
        super().__init__()
        self.model, self.pad_id = model, pad_id

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tokens = batch["text"]
        logits = self.model(tokens[:, :-1], None)[0]
        loss = caption_loss(logits, tokens, self.pad_id)
        return {"loss": loss, "lm": loss.detach()}

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        raise ConfigError(NO_SCORING)

    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        raise ConfigError(NO_SCORING)

    def scores(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        raise ConfigError(NO_SCORING)
