"""Config sections: the typed, validated parts of a run config, at the bottom of the layers.

Each section is a strict pydantic model whose fields carry their description and bounds. The
whole run config, which adds the objective's own section and the evaluation tasks, is
:class:`vislang.experiment.RunConfig`.
"""

from vislang.config.base import Section
from vislang.config.data import CitConfig, DataConfig, SourceConfig, WorldConfig
from vislang.config.model import ModelConfig, TextConfig, VisionConfig
from vislang.config.presets import OPENAI_MEAN, OPENAI_STD, PRESETS
from vislang.config.train import ParamRule, TokenizerConfig, TrainConfig

__all__ = [
    "OPENAI_MEAN",
    "OPENAI_STD",
    "PRESETS",
    "CitConfig",
    "DataConfig",
    "ModelConfig",
    "ParamRule",
    "Section",
    "SourceConfig",
    "TextConfig",
    "TokenizerConfig",
    "TrainConfig",
    "VisionConfig",
    "WorldConfig",
]
