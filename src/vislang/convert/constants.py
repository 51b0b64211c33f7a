"""Preprocessing constants the converters share.

OpenAI CLIP's image statistics (``vislang.config.presets``) are the default of OpenCLIP and what
HF ``CLIPModel`` checkpoints are prepared with; here with the resize that goes with them.
"""

from __future__ import annotations

from typing import Any

from vislang.config.presets import OPENAI_MEAN, OPENAI_STD

# How OpenAI prepared CLIP's images: bicubic resize of the shortest side, centre crop, these statistics.
OPENAI_PREPROCESS: dict[str, Any] = {
    "mean": OPENAI_MEAN,
    "std": OPENAI_STD,
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}
