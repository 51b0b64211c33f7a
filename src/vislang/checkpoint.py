"""Reading and writing what a run leaves: step checkpoints and exported model directories.

A checkpoint is one ``torch.save`` file holding the objective's weights, optimizer, scheduler,
RNG states, step, data position, the resolved config and the tokenizer. It is written to a
temporary file in the same folder, flushed to disk and renamed over the final name, so a run
killed at any moment leaves either the old or the new checkpoint, never half of one. Loading
uses ``weights_only=True``: a checkpoint can never run code.

An export is a directory of plain files, loadable without unpickling anything:
``model.safetensors`` (the objective's weights), ``config.json`` (the resolved run config) and
``tokenizer.json``. :func:`read_export` gives it the shape of a checkpoint, so training,
``vislang.load`` and the converters read both through one module.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vislang.errors import CheckpointError, first_line

WEIGHTS, CONFIG, TOKENIZER = "model.safetensors", "config.json", "tokenizer.json"

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
        raise CheckpointError(f"cannot read checkpoint {path}: {first_line(error)}") from None


def is_export(path: str | Path) -> bool:
    return (Path(path) / WEIGHTS).is_file()


def write_export(checkpoint: dict, out: str | Path, source: str | None = None) -> Path:
    """Write a checkpoint-shaped dict (``config`` dict, ``tokenizer`` JSON text, ``model`` state
    of the objective) as an export directory."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # shared or non-contiguous tensors cannot be saved by safetensors as they are
    state = {k: v.detach().contiguous().clone() for k, v in checkpoint["model"].items()}
    kind = checkpoint["config"]["objective"]
    meta = {"format": "vislang", "objective": kind["kind"] if isinstance(kind, dict) else str(kind)}
    save_file(state, str(out / WEIGHTS), metadata=meta | ({"source": source} if source else {}))
    (out / CONFIG).write_text(json.dumps(checkpoint["config"], indent=2) + "\n")
    (out / TOKENIZER).write_text(checkpoint["tokenizer"])
    return out


def read_export(path: str | Path) -> dict:
    """The contents of an exported directory in the shape of a checkpoint (config, tokenizer,
    model state)."""
    path = Path(path)
    try:
        return {
            "config": json.loads((path / CONFIG).read_text()),
            "tokenizer": (path / TOKENIZER).read_text(),
            "model": load_file(str(path / WEIGHTS)),
        }
    except (OSError, ValueError, SafetensorError) as error:
        raise CheckpointError(f"{path}: not a vislang export ({first_line(error)})") from None


def read_model(path: str | Path) -> dict:
    """A vislang checkpoint file, run directory (its latest checkpoint) or export, as a checkpoint dict."""
    return read_export(path) if is_export(path) else load_checkpoint(path)
