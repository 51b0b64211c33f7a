"""FLYP (placeholder: being written)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vislang.objectives.contrastive import ClipConfig


class FlypConfig(ClipConfig):
    kind: Literal["flyp"] = Field("flyp", description="the objective")  # type: ignore[assignment]
