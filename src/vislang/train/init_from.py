"""Starting from another run's weights: one tower (``model.vision.init_from``) or the whole
objective (``train.init_from``, fine-tuning)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from vislang.checkpoint import is_export, read_model
from vislang.errors import CheckpointError, ConfigError
from vislang.experiment import RunConfig
from vislang.restore import (
    adapted_modules,
    architecture_difference,
    objective_from_checkpoint,
    saved_config,
    weights_for_use,
)


def usable_weights(state: dict, source: str | Path) -> dict:
    """The weights a checkpoint-shaped dict is used with: the EMA average where one was kept,
    LoRA adapters merged."""
    model = weights_for_use(state) if "model" in state else {}
    if adapted_modules(model):
        model = objective_from_checkpoint(state, source)[0].state_dict()
    return model


def check_start_architecture(cfg: RunConfig, state: dict, source: str | Path) -> None:
    """Refuse a start whose saved model section computes differently from the run's: equal
    shapes do not make equal models (QuickGELU or GELU, pooling, norms), and a fine-tune that
    silently changed the computation would look like a failed method."""
    differs = architecture_difference(cfg, saved_config(state, source, is_export(source)))
    if differs:
        key, ours, theirs = differs
        raise ConfigError(
            f"train.init_from {source}: {key} is {theirs!r} there, {ours!r} in this config "
            "(use the model section of the model you start from: its config.json, or the matching preset)"
        )


def init_objective_from(objective: nn.Module, state: dict, source: str | Path) -> str:
    """Load every tensor of ``state`` (a checkpoint dict read from ``source``) that ``objective``
    has, by name; returns the log line. A shape mismatch, or a source that shares nothing with the
    objective, is an error naming the tensor: the model section must describe the source's model."""
    weights = usable_weights(state, source)
    own = objective.state_dict()
    shared = [k for k in own if k in weights]
    if not shared:
        raise CheckpointError(f"{source}: none of its tensors matches this objective's parameter names")
    for name in shared:
        if weights[name].shape != own[name].shape:
            raise CheckpointError(
                f"{source}: {name} has shape {tuple(weights[name].shape)}, this model needs {tuple(own[name].shape)} "
                "(train.init_from needs the model section of the model it starts from)"
            )
    objective.load_state_dict({k: weights[k] for k in shared}, strict=False)
    fresh = [k for k in own if k not in weights]
    unused = [k for k in weights if k not in own]
    return (
        f"init_from: {len(shared)} tensors from {source}"
        + (f"; fresh: {', '.join(fresh)}" if fresh else "")
        + (f"; not used: {len(unused)} ({', '.join(unused[:3])}{', ...' if len(unused) > 3 else ''})" if unused else "")
    )


def init_tower_from(tower: nn.Module, source: str | Path, prefix: str) -> tuple[int, list[str]]:
    """Copy the tensors under ``prefix`` (e.g. "model.vision.") of the checkpoint ``source`` into
    ``tower``. Returns how many were copied and the names of the tower's tensors the source lacks
    (left as initialised). Differing shapes, or a source with nothing under ``prefix`` for this
    tower, are errors: a silently fresh tower would look like a failed experiment."""
    model = usable_weights(read_model(source), source)
    weights = {k[len(prefix) :]: v for k, v in model.items() if k.startswith(prefix)}
    own = tower.state_dict()
    shared = [k for k in own if k in weights]
    if not shared:
        raise CheckpointError(f"{source}: no tensor under {prefix!r} matches this tower's parameter names")
    for name in shared:
        if weights[name].shape != own[name].shape:
            raise CheckpointError(
                f"{source}: {prefix}{name} has shape {tuple(weights[name].shape)}, this tower needs {tuple(own[name].shape)}"
            )
    tower.load_state_dict({k: weights[k] for k in shared}, strict=False)
    return len(shared), [k for k in own if k not in weights]
