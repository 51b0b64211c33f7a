"""``vislang export``: a checkpoint (or any model ``vislang.load`` opens) as an export directory.

The directory holds plain files, loadable without unpickling anything: ``model.safetensors``,
``config.json`` and ``tokenizer.json`` (the format is :mod:`vislang.checkpoint`'s). The export
is self-contained except where its config names local files outside it, which loading reads:
``model.text.pretrained`` (a Hugging Face directory) and ``model.vision.timm_pretrained``.

An export holds plain weights only: LoRA adapters (``train.lora``) are merged into the layers they
adapt and the exported config no longer asks for them, so any reader opens it as an ordinary model.
"""

from __future__ import annotations

import copy
from pathlib import Path

from vislang.api import load_objective
from vislang.checkpoint import write_export
from vislang.restore import has_adapters, merge_adapters, without_lora


def export_objective(objective, tokenizer, cfg, out: str | Path) -> Path:
    """Write an objective in memory (with its tokenizer and run config) as an export directory;
    one still carrying LoRA adapters is written merged (from a copy: the caller's is untouched)."""
    if has_adapters(objective):
        objective = copy.deepcopy(objective)
        merge_adapters(objective)
        cfg = without_lora(cfg)
    checkpoint = {
        "config": cfg.model_dump(mode="json"),
        "tokenizer": tokenizer.to_json(),
        "model": objective.state_dict(),
    }
    if objective.classes is not None:  # a head over classes: its class list travels with it
        checkpoint["classes"] = objective.classes.to_json()
    return write_export(checkpoint, out)


def export_model(source: str | Path, out: str | Path) -> Path:
    """Write the checkpoint (or run directory's latest checkpoint, or peer folder) at ``source`` to ``out``."""
    return export_objective(*load_objective(source), out)
