"""Starting from another run's weights: one tower (``model.vision.init_from``) or the whole
objective (``train.init_from``, fine-tuning). A start trained at another image size or context
length is fine: the towers resize its position embeddings to theirs
(:func:`vislang.models.positions.adapt_positions`) before the shapes are checked."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from vislang.checkpoint import is_export, read_model
from vislang.errors import CheckpointError, ConfigError
from vislang.experiment import RunConfig
from vislang.models.positions import adapt_positions
from vislang.objectives import Objective
from vislang.restore import (
    adapted_modules,
    architecture_difference,
    objective_from_checkpoint,
    saved_config,
    weights_for_use,
    with_inputs,
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
    saved = saved_config(state, source, is_export(source))  # positions adapt: sizes may differ
    saved = with_inputs(saved, cfg.model.vision.image_size, cfg.model.text.context_length)
    differs = architecture_difference(cfg, saved)
    if differs:
        key, ours, theirs = differs
        raise ConfigError(
            f"train.init_from {source}: {key} is {theirs!r} there, {ours!r} in this config "
            "(use the model section of the model you start from: its config.json, or the matching preset)"
        )


def load_matching(
    module: nn.Module, weights: dict, source: str | Path, prefix: str = "", notes: list[str] | None = None
) -> list[str]:
    """Load the tensors of ``weights`` whose names ``module`` has (``prefix`` is what they carry
    in the source, e.g. "model.vision."); returns those names. Position embeddings of another
    size are resized first (a line for each is added to ``notes``). A source sharing none of
    them, or one of another shape, is an error naming the tensor: a silently fresh module would
    look like a failed experiment."""
    weights = dict(weights)
    try:
        resized = adapt_positions(module, weights)
    except (ValueError, RuntimeError) as error:  # a table that is no grid; timm's resampling refusing it
        raise CheckpointError(f"{source}: {error}") from None
    if notes is not None:
        notes += [f"{prefix}{line}" for line in resized]
    own = module.state_dict()
    shared = [k for k in own if k in weights]
    if not shared:
        raise CheckpointError(
            f"{source}: no tensor {f'under {prefix!r} ' if prefix else ''}matches the parameter names here"
        )
    for name in shared:
        if weights[name].shape != own[name].shape:
            raise CheckpointError(
                f"{source}: {prefix}{name} has shape {tuple(weights[name].shape)}, this model needs "
                f"{tuple(own[name].shape)}"
            )
    module.load_state_dict({k: weights[k] for k in shared}, strict=False)
    return shared


def init_objective_from(objective: Objective, state: dict, source: str | Path) -> str:
    """Load every tensor of ``state`` (a checkpoint dict read from ``source``) that ``objective``
    has, by name; returns the log line. New tensors (a classification head) start fresh."""
    reset = objective.set_by_start  # set afresh by Objective.start: whatever the start holds there is not loaded
    weights = {k: v for k, v in usable_weights(state, source).items() if not (reset and k.startswith(reset))}
    resized: list[str] = []
    shared = load_matching(objective, weights, source, notes=resized)
    fresh = [k for k in objective.state_dict() if k not in weights]
    unused = [k for k in weights if k not in set(shared)]
    return (
        f"init_from: {len(shared)} tensors from {source}"
        + (f"; fresh: {', '.join(fresh)}" if fresh else "")
        + (f"; not used: {len(unused)} ({', '.join(unused[:3])}{', ...' if len(unused) > 3 else ''})" if unused else "")
        + (f"; {'; '.join(resized)}" if resized else "")
    )


def init_tower_from(
    tower: nn.Module, source: str | Path, prefix: str, notes: list[str] | None = None
) -> tuple[int, list[str]]:
    """Copy the tensors under ``prefix`` (e.g. "model.vision.") of the checkpoint ``source`` into
    ``tower`` (positions resized: lines in ``notes``). Returns how many were copied and the names
    of the tower's tensors the source lacks (left as initialised)."""
    model = usable_weights(read_model(source), source)
    weights = {k[len(prefix) :]: v for k, v in model.items() if k.startswith(prefix)}
    shared = load_matching(tower, weights, source, prefix, notes)
    return len(shared), [k for k in tower.state_dict() if k not in weights]
