"""``vislang export``: a checkpoint (or any model ``vislang.load`` opens) as an export directory.

The directory holds plain files, loadable without unpickling anything: ``model.safetensors``,
``config.json`` and ``tokenizer.json`` (the format is :mod:`vislang.checkpoint`'s). The export
is self-contained except where its config names local files outside it, which loading reads:
``model.text.pretrained`` (a Hugging Face directory) and ``model.vision.timm_pretrained``.

An export holds plain weights only: LoRA adapters (``train.lora``) are merged into the layers they
adapt and the exported config no longer asks for them, so any reader opens it as an ordinary model.

``--format onnx`` writes the two towers as ONNX graphs instead (:mod:`vislang.onnx.export`), with
the tokenizer, the run config and a manifest of the preprocessing and temperature beside them;
``vislang.load`` opens that directory through onnxruntime.
"""

from __future__ import annotations

import copy
from pathlib import Path

from vislang.api import load_objective
from vislang.checkpoint import write_export
from vislang.errors import ConfigError
from vislang.onnx.export import export_onnx
from vislang.onnx.runtime import OnnxTwoTower
from vislang.restore import has_adapters, merge_adapters, without_lora

FORMATS = ("safetensors", "onnx")


def _merged(objective, cfg):
    """(objective, cfg) with LoRA adapters merged, from a copy (the caller's is untouched)."""
    if not has_adapters(objective):
        return objective, cfg
    objective = copy.deepcopy(objective)
    merge_adapters(objective)
    return objective, without_lora(cfg)


def export_objective(objective, tokenizer, cfg, out: str | Path) -> Path:
    """Write an objective in memory (with its tokenizer and run config) as an export directory;
    one still carrying LoRA adapters is written merged (from a copy: the caller's is untouched)."""
    objective, cfg = _merged(objective, cfg)
    checkpoint = {
        "config": cfg.model_dump(mode="json"),
        "tokenizer": tokenizer.to_json(),
        "model": objective.state_dict(),
    }
    if objective.classes is not None:  # a head over classes: its class list travels with it
        checkpoint["classes"] = objective.classes.to_json()
    return write_export(checkpoint, out)


def export_model(source: str | Path, out: str | Path, format: str = "safetensors") -> Path:
    """Write the checkpoint (or run directory's latest checkpoint, or peer folder) at ``source`` to
    ``out`` as ``format``: safetensors (the weights) or onnx (the two towers' graphs)."""
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}: one of {', '.join(FORMATS)}")
    objective, tokenizer, cfg = load_objective(source)
    if isinstance(objective.model, OnnxTwoTower):  # its weights are inside graphs: nothing to re-export from
        raise ConfigError(f"{source} is an ONNX export; export from the checkpoint or export it was made from")
    if format == "onnx":
        plain, plain_cfg = _merged(objective, cfg)
        return export_onnx(plain, tokenizer, plain_cfg, out)[0]
    return export_objective(objective, tokenizer, cfg, out)
