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

import errno
import json
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vislang.errors import CheckpointError, first_line
from vislang.files import give_normal_mode, parse_json, read_json, read_text

WEIGHTS, CONFIG, TOKENIZER = "model.safetensors", "config.json", "tokenizer.json"
CLASSES = "classes.json"  # the class list of an objective with a head over classes (see vislang.classes)

_NAME = re.compile(r"^step_(\d{8})\.pt$")
CHECKPOINT_TEMP = ".step_*.pt.tmp-*"  # a write in progress, or left by a killed writer
# how PyTorch names a global outside its allowlist (it words blocked modules differently)
_UNSAFE_GLOBAL = re.compile(r"(?:Unsupported (?:global: GLOBAL|class)|unsupported GLOBAL) (\S+)")


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"step_{step:08d}.pt"


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoints in ``directory`` ordered by step (temporary files are ignored)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def save_checkpoint(state: dict[str, Any], directory: Path, step: int, keep: int) -> Path:
    """Write ``state`` atomically as step ``step``'s checkpoint and keep the newest ``keep``. A write
    that fails (a full disk) removes its temporary file and leaves the earlier checkpoints as they were."""
    directory.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(directory, step)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except (OSError, RuntimeError) as error:  # torch.save wraps write errors in RuntimeError
        tmp.unlink(missing_ok=True)
        full = isinstance(error, OSError) and error.errno == errno.ENOSPC or "No space left" in str(error)
        why = "no space left on the device" if full else first_line(error)
        raise CheckpointError(f"cannot write checkpoint {final}: {why} (the earlier checkpoints are kept)") from None
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return final


def read_torch_file(path: Path, what: str = "checkpoint") -> Any:
    """``torch.load`` with ``weights_only``, every failure one line: missing, empty, truncated or
    not a torch file, or holding Python objects other than tensors (refused: it could run code)."""
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the {what} is empty (0 bytes; a write was interrupted?)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # PyTorch's message (whatever the cause) advises weights_only=False: never repeated here.
        # Only a pickle naming a global outside the allowlist is unsafe; random bytes, text or a
        # truncated legacy file fail on an unsupported opcode ("Unsupported operand") instead.
        unsafe = _UNSAFE_GLOBAL.search(str(error))
        if unsafe:
            raise CheckpointError(
                f"{path}: the {what} holds Python objects other than tensors ({unsafe.group(1)}); refused, since "
                "loading it could run code"
            ) from None
        raise CheckpointError(f"{path}: not a readable {what} (truncated or another format)") from None
    except (RuntimeError, EOFError, ValueError, OSError, AttributeError, IndexError) as error:
        raise CheckpointError(
            f"{path}: not a readable {what} (truncated or another format: {first_line(error).split('. ')[0]})"
        ) from None


def _checked(state: Any, path: Path) -> dict[str, Any]:
    """``state`` if it has what every vislang checkpoint holds: weights, a config, a tokenizer."""
    config = state.get("config") if isinstance(state, dict) else None
    if not isinstance(state.get("model") if isinstance(state, dict) else None, dict) or not isinstance(config, dict) \
            or not config or not isinstance(state.get("tokenizer"), str):  # fmt: skip
        raise CheckpointError(f"{path}: not a vislang checkpoint (no model weights, config and tokenizer in it)")
    return state


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint file, or the newest checkpoint of a run directory (or its checkpoints/ folder)."""
    path = Path(path)
    if path.is_dir():
        folder = path / "checkpoints" if list_checkpoints(path / "checkpoints") else path
        return load_latest_readable(folder)
    return _checked(read_torch_file(path), path)


def load_latest_readable(folder: Path) -> dict[str, Any]:
    """The newest checkpoint in ``folder`` that reads; a newer one that does not (a truncated or
    empty file) is passed over, and named in the error if none reads."""
    found = list_checkpoints(folder)
    if not found:
        raise CheckpointError(f"no checkpoint in {folder.parent if folder.name == 'checkpoints' else folder}")
    errors = []
    for path in reversed(found):
        try:
            return _checked(read_torch_file(path), path)
        except CheckpointError as error:
            errors.append(str(error))
    raise CheckpointError(
        errors[0] + (f" (and {len(errors) - 1} older checkpoints unreadable)" if len(errors) > 1 else "")
    )


def is_export(path: str | Path) -> bool:
    return (Path(path) / WEIGHTS).is_file()


def save_safetensors(state: dict[str, torch.Tensor], path: str | Path, metadata: dict | None = None) -> Path:
    """``safetensors`` ``save_file``, leaving the file with a normal file's mode (safetensors
    alone makes it 0600 while every other file of an export is 0666 & ~umask)."""
    save_file(state, str(path), metadata=metadata)
    give_normal_mode(path)
    return Path(path)


def read_safetensors(path: str | Path, what: str = "weights file") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; missing, empty, truncated or another format is one line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the {what} is empty (0 bytes; a write was interrupted?)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"{path}: not a readable safetensors {what} (truncated or another format: {first_line(error)})"
        ) from None


def write_export(checkpoint: dict, out: str | Path, source: str | None = None) -> Path:
    """Write a checkpoint-shaped dict (``config`` dict, ``tokenizer`` JSON text, ``model`` state
    of the objective) as an export directory; every file gets a normal file's mode."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # shared or non-contiguous tensors cannot be saved by safetensors as they are
    state = {k: v.detach().contiguous().clone() for k, v in checkpoint["model"].items()}
    kind = checkpoint["config"]["objective"]
    meta = {"format": "vislang", "objective": kind["kind"] if isinstance(kind, dict) else str(kind)}
    save_safetensors(state, out / WEIGHTS, metadata=meta | ({"source": source} if source else {}))
    (out / CONFIG).write_text(json.dumps(checkpoint["config"], indent=2) + "\n")
    (out / TOKENIZER).write_text(checkpoint["tokenizer"])
    if checkpoint.get("classes") is not None:
        (out / CLASSES).write_text(json.dumps(checkpoint["classes"], indent=2) + "\n")
    return out


def read_export(path: str | Path) -> dict:
    """The contents of an exported directory in the shape of a checkpoint (config, tokenizer,
    model state); a missing or broken file is one line naming it."""
    path = Path(path)
    config = read_json(path / CONFIG, "export config", CheckpointError)
    if not isinstance(config, dict):
        raise CheckpointError(f"{path / CONFIG}: not a vislang export config (a JSON object of config sections)")
    tokenizer = read_text(path / TOKENIZER, "tokenizer file", CheckpointError)  # read once, parsed to check
    if not isinstance(parse_json(tokenizer, path / TOKENIZER, "tokenizer file", CheckpointError), dict):
        raise CheckpointError(f"{path / TOKENIZER}: not a tokenizer (a JSON object)")
    classes = read_json(path / CLASSES, "class list", CheckpointError) if (path / CLASSES).is_file() else None
    return {
        "config": config,
        "tokenizer": tokenizer,
        "model": read_safetensors(path / WEIGHTS, "model weights file"),
    } | ({"classes": classes} if classes is not None else {})


def read_model(path: str | Path) -> dict:
    """A vislang checkpoint file, run directory (its latest checkpoint) or export, as a checkpoint dict."""
    return read_export(path) if is_export(path) else load_checkpoint(path)
