"""Objectives by kind: the ``objective.kind`` config field picks one of :data:`OBJECTIVES`.

Each objective file declares its config section (a subclass of
:class:`~vislang.objectives.base.ObjectiveConfig` that builds the objective) and the objective
itself; adding an objective means adding its file and one line here.
"""

from vislang.objectives.base import Objective, ObjectiveConfig
from vislang.objectives.captioning import CapConfig, CappaConfig
from vislang.objectives.classifier import ClassifierConfig
from vislang.objectives.coca import CocaConfig
from vislang.objectives.contrastive import ClipConfig
from vislang.objectives.coop import CoopConfig
from vislang.objectives.flyp import FlypConfig
from vislang.objectives.lm import LmConfig
from vislang.objectives.mae import MaeConfig
from vislang.objectives.sigmoid import SiglipConfig

OBJECTIVES: dict[str, type[ObjectiveConfig]] = {
    "clip": ClipConfig,
    "siglip": SiglipConfig,
    "cap": CapConfig,
    "cappa": CappaConfig,
    "coca": CocaConfig,
    # unimodal pretraining (CONCH): the image tower alone, a text decoder alone
    "mae": MaeConfig,
    "lm": LmConfig,
    # fine-tuning on labelled images (data.sources: [{kind: labelled, ...}])
    "flyp": FlypConfig,
    "classifier": ClassifierConfig,
    "coop": CoopConfig,
}

__all__ = ["OBJECTIVES", "Objective", "ObjectiveConfig"]
