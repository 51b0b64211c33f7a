"""Opening vislang's own checkpoints and exports as ready objectives.

A checkpoint (or export) carries its resolved config and its tokenizer, so the objective is
rebuilt from them alone (a config saved in an earlier layout is upgraded first); the weights
are then loaded strictly. Peer formats (OpenCLIP, Hugging
Face) are converted into the same checkpoint shape by :mod:`vislang.convert`.

A checkpoint of a run that kept a moving average of its weights (``train.ema_decay``) holds the
raw weights under ``model`` (training continues from them) and the averaged trainable
parameters under ``ema``; loaded for use, it gives the average (:func:`weights_for_use`), so
``vislang.load``, evaluation and ``vislang export`` (which then writes plain averaged weights)
all see the weights the run evaluated.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import ValidationError

from vislang.checkpoint import CONFIG, TOKENIZER, is_export, read_model
from vislang.config import legacy
from vislang.config.base import format_error
from vislang.errors import CheckpointError, ConfigError, first_line
from vislang.experiment import RunConfig, build_objective
from vislang.objectives import Objective
from vislang.tokenizers import BPETokenizer


def saved_config(checkpoint: dict, source: str | Path = "checkpoint", export: bool = False) -> RunConfig:
    """The run config a checkpoint (or export) carries, upgraded from an earlier layout; any
    problem is one :class:`CheckpointError` naming ``source`` (or the export's config.json)."""
    try:
        return RunConfig.model_validate(legacy.upgrade(checkpoint["config"]))
    except ValidationError as error:
        where = Path(source) / CONFIG if export else source
        raise CheckpointError(f"{format_error(error, str(where))} (in the saved config)") from None
    except KeyError as error:
        raise CheckpointError(f"{source}: not a vislang checkpoint (no {error})") from None
    except (TypeError, AttributeError, ValueError) as error:
        raise CheckpointError(f"{source}: not a vislang checkpoint (its config: {first_line(error)})") from None


def weights_for_use(checkpoint: dict) -> dict:
    """The model state a checkpoint is used with: ``model``, with the moving average of the
    trainable parameters (``ema``, where the run kept one) laid over it; frozen parameters and
    buffers are the same in both."""
    average = checkpoint.get("ema")
    return {**checkpoint["model"], **average} if isinstance(average, dict) else checkpoint["model"]


def objective_from_checkpoint(
    checkpoint: dict, source: str | Path = "checkpoint", export: bool = False
) -> tuple[Objective, BPETokenizer, RunConfig]:
    """(objective in eval mode, tokenizer, config) of a checkpoint-shaped dict; every way the
    dict can be wrong (config, tokenizer, weights) is one :class:`CheckpointError` naming
    ``source``, or the export's own file when ``source`` is an export directory."""
    cfg = saved_config(checkpoint, source, export)
    try:
        tokenizer = BPETokenizer.from_json(checkpoint["tokenizer"], cfg.model.text.context_length)
    except KeyError as error:
        raise CheckpointError(f"{source}: not a vislang checkpoint (no {error})") from None
    except ConfigError as error:
        raise CheckpointError(f"{Path(source) / TOKENIZER if export else source}: {error}") from None
    try:
        objective = build_objective(cfg, tokenizer.vocab_size, tokenizer.pad_id)
        objective.load_state_dict(weights_for_use(checkpoint))
    except (KeyError, ValueError, RuntimeError, TypeError) as error:
        raise CheckpointError(f"{source}: not a vislang checkpoint ({first_line(error)})") from None
    return objective.eval(), tokenizer, cfg


def load_objective(path: str | Path, device: str | torch.device = "cpu") -> tuple[Objective, BPETokenizer, RunConfig]:
    """The objective of a vislang checkpoint file, run directory (latest checkpoint) or export."""
    objective, tokenizer, cfg = objective_from_checkpoint(read_model(path), path, is_export(path))
    return objective.to(device), tokenizer, cfg
