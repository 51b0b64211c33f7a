"""Step-level checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint is one ``torch.save`` file holding the objective's weights, optimizer, scheduler,
RNG states, step, data position, the resolved config and the tokenizer. It is written to a
temporary file in the same folder, flushed to disk and renamed over the final name, so a run
killed at any moment leaves either the old or the new checkpoint, never half of one. Loading
uses ``weights_only=True``: a checkpoint can never run code.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vislang.errors import CheckpointError

_NAME = re.compile(r"^step_(\d{8})\.pt$")


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"step_{step:08d}.pt"


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoints in ``directory`` ordered by step (temporary files are ignored)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def save_checkpoint(state: dict[str, Any], directory: Path, step: int, keep: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(directory, step)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return final


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():  # a run directory or its checkpoints/ folder: take the latest
        found = list_checkpoints(path / "checkpoints") or list_checkpoints(path)
        if not found:
            raise CheckpointError(f"no checkpoint in {path}")
        path = found[-1]
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors come in many types
        raise CheckpointError(f"cannot read checkpoint {path}: {str(error).splitlines()[0]}") from None


def init_tower_from(tower: nn.Module, source: str | Path, prefix: str) -> tuple[int, list[str]]:
    """Copy the tensors under ``prefix`` (e.g. "model.vision.") of the checkpoint ``source`` into
    ``tower``. Returns how many were copied and the names of the tower's tensors the source lacks
    (left as initialised). Differing shapes, or a source with nothing under ``prefix`` for this
    tower, are errors: a silently fresh tower would look like a failed experiment."""
    state = load_checkpoint(source)
    weights = {k[len(prefix) :]: v for k, v in state.get("model", {}).items() if k.startswith(prefix)}
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


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
