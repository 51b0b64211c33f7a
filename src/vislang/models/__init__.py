"""The model classes: towers, decoders and the models built from them.

This layer takes plain arguments and imports no config, so it can be used (and tested) without
a run config; :mod:`vislang.objectives.towers` turns the ``model`` config section into these.
"""

from __future__ import annotations

from vislang.models.captioner import Captioner
from vislang.models.coca import CoCa
from vislang.models.text.decoder import TextDecoder
from vislang.models.text.pretrained import PretrainedTextTower
from vislang.models.text.transformer import TextTransformer
from vislang.models.two_tower import TwoTower
from vislang.models.vision.timm_tower import TimmTower
from vislang.models.vision.vit import VisionTransformer

__all__ = [
    "Captioner",
    "CoCa",
    "PretrainedTextTower",
    "TextDecoder",
    "TextTransformer",
    "TimmTower",
    "TwoTower",
    "VisionTransformer",
]
