"""CoOp (placeholder: being written)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from vislang.classes import ClassTask
from vislang.config import ModelConfig
from vislang.objectives.base import Objective, ObjectiveConfig


class CoopConfig(ObjectiveConfig):
    kind: Literal["coop"] = Field("coop", description="the objective")
    needs_labels: ClassVar[bool] = True
    needs_classes: ClassVar[bool] = True

    def build(self, model: ModelConfig, vocab_size: int, pad_id: int, classes: ClassTask | None = None) -> Objective:
        raise NotImplementedError("coop")
