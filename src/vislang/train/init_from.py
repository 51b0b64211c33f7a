"""Starting a tower from another run's weights (``model.vision.init_from``)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from vislang.checkpoint import read_model
from vislang.errors import CheckpointError
from vislang.restore import adapted_modules, objective_from_checkpoint, weights_for_use


def init_tower_from(tower: nn.Module, source: str | Path, prefix: str) -> tuple[int, list[str]]:
    """Copy the tensors under ``prefix`` (e.g. "model.vision.") of the checkpoint ``source`` into
    ``tower``. Returns how many were copied and the names of the tower's tensors the source lacks
    (left as initialised). Differing shapes, or a source with nothing under ``prefix`` for this
    tower, are errors: a silently fresh tower would look like a failed experiment."""
    state = read_model(source)
    model = weights_for_use(state) if "model" in state else {}  # an EMA run gives its average
    if adapted_modules(model):  # a LoRA run: its weights with the adapters merged in
        model = objective_from_checkpoint(state, source)[0].state_dict()
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
