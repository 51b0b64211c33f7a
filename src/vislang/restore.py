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

A checkpoint of a LoRA run (``train.lora``) holds peft's layers (``...in_proj.base_layer.weight``,
``...in_proj.lora_A.default.weight``, ...). Loaded for use, the adapters are injected where its
weights have them, loaded, then merged (``W + alpha/rank · B·A``) and removed: the objective is a
plain one, and the config returned no longer asks for LoRA, so an export of it is an ordinary model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from vislang.checkpoint import CLASSES, CONFIG, TOKENIZER, is_export, read_model
from vislang.classes import ClassTask
from vislang.config import legacy
from vislang.config.base import format_error
from vislang.config.train import LoraConfig, stage_values
from vislang.errors import CheckpointError, ConfigError, first_line
from vislang.experiment import RunConfig, build_objective
from vislang.objectives import Objective
from vislang.tokenizers import BPETokenizer

# model-section fields that say how training starts or runs, not what the weights compute
TRAINING_ONLY = {
    "": ("preset", "init_logit_scale", "init_logit_bias"),
    "vision": ("grad_checkpointing", "lock", "unlocked_blocks", "mask_ratio", "init_from", "timm_pretrained"),
    "text": ("grad_checkpointing", "lock", "unlocked_blocks"),
}


def architecture_difference(a: RunConfig, b: RunConfig) -> tuple[str, Any, Any] | None:
    """The first model-section field (dotted key, value in ``a``, value in ``b``) in which two
    configs describe different computations, or None: weights of one then compute the same in
    the other (WiSE-FT's end points, a fine-tune's start)."""

    def fields(cfg: RunConfig) -> dict[str, Any]:
        model = cfg.model.model_dump(mode="json")
        for section, names in TRAINING_ONLY.items():
            for name in names:
                (model[section] if section else model).pop(name, None)
        if model["text"].get("causal"):  # a causal mask already hides what follows: padding masks change nothing
            model["text"].pop("mask_padding", None)
        return model

    def first(x: Any, y: Any, where: str) -> tuple[str, Any, Any] | None:
        if isinstance(x, dict) and isinstance(y, dict):
            return next((f for k in sorted(set(x) | set(y)) if (f := first(x.get(k), y.get(k), f"{where}.{k}"))), None)
        return None if x == y else (where, x, y)

    return first(fields(a), fields(b), "model")


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


def inject_adapters(module: nn.Module, lora: LoraConfig, names: list[str]) -> None:
    """Wrap the Linear layers at ``names`` (module paths in ``module``) in peft's LoRA layers, in
    place: ``module`` keeps its own classes, so training, scoring and evaluation see the same
    objective. peft leaves only the adapters trainable; callers decide what trains after it."""
    import peft  # seconds to import: only runs that use LoRA pay for it

    config = peft.LoraConfig(
        r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(names), bias="none"
    )
    peft.inject_adapter_in_model(config, module)


def adapted_modules(state: dict) -> list[str]:
    """The module paths a state dict holds LoRA adapters for (``PATH.lora_A.<adapter>.weight``)."""
    return sorted({key.split(".lora_A.")[0] for key in state if ".lora_A." in key})


def has_adapters(module: nn.Module) -> bool:
    """Whether peft's adapters are in ``module`` (by their parameter names, so that a model
    without LoRA never imports peft)."""
    return bool(adapted_modules(dict(module.named_parameters())))


@torch.no_grad()
def merge_adapters(module: nn.Module) -> int:
    """Fold every adapter into its layer's weight and put the plain layer back in its place, so
    the module's state dict has the names and shapes of a model without adapters; returns how many
    layers were merged. Every parameter is trainable afterwards, as in a freshly built model."""
    if not has_adapters(module):
        return 0
    from peft.tuners.tuners_utils import BaseTunerLayer

    merged = 0
    for name, layer in list(module.named_modules()):
        if isinstance(layer, BaseTunerLayer):
            layer.merge(safe_merge=True)  # refuses to fold in non-finite values
            parent, _, child = name.rpartition(".")
            setattr(module.get_submodule(parent) if parent else module, child, layer.get_base_layer())
            merged += 1
    if merged:
        for attribute in ("peft_config", "_hf_peft_config_loaded"):  # what peft's injection left on the module
            if hasattr(module, attribute):
                delattr(module, attribute)
        for param in module.parameters():
            param.requires_grad_(True)
    return merged


def without_lora(cfg: RunConfig) -> RunConfig:
    """``cfg`` describing the merged model: ``train.lora`` unset."""
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"lora": None})})


def with_inputs(
    cfg: RunConfig, image_size: int | None = None, context_length: int | None = None, mask_ratio: float | None = None
) -> RunConfig:
    """``cfg`` with the model's inputs changed (the fields given), validated: an image size that
    is not a multiple of the patch size is one :class:`ConfigError`."""
    vision = {k: v for k, v in (("image_size", image_size), ("mask_ratio", mask_ratio)) if v is not None}
    text = {"context_length": context_length} if context_length is not None else {}
    v, t = cfg.model.vision, cfg.model.text
    try:
        v = type(v).model_validate(v.model_dump() | vision) if vision else v
        t = type(t).model_validate(t.model_dump() | text) if text else t
    except ValidationError as error:
        raise ConfigError(error.errors()[0]["msg"].removeprefix("Value error, ")) from None
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"vision": v, "text": t})})


def as_trained(cfg: RunConfig, step: int | None) -> RunConfig:
    """``cfg`` describing the model a checkpoint of ``step`` holds: the ``train.stages`` that
    trained that step (begun after ``step - 1`` steps) written into the model section, the stages
    cleared (an export of it is a plain model). Without a step (an export) the end of training."""
    if not cfg.train.stages:
        return cfg
    values = stage_values(cfg.train.stages, (cfg.train.steps if step is None else step) - 1)
    cfg = with_inputs(cfg, values.get("image_size"), values.get("context_length"), values.get("mask_ratio"))
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"stages": []})})


def objective_from_checkpoint(
    checkpoint: dict, source: str | Path = "checkpoint", export: bool = False
) -> tuple[Objective, BPETokenizer, RunConfig]:
    """(objective in eval mode, tokenizer, config) of a checkpoint-shaped dict; every way the
    dict can be wrong (config, tokenizer, weights) is one :class:`CheckpointError` naming
    ``source``, or the export's own file when ``source`` is an export directory."""
    cfg = as_trained(saved_config(checkpoint, source, export), checkpoint.get("step"))
    try:
        tokenizer = BPETokenizer.from_json(checkpoint["tokenizer"], cfg.model.text.context_length)
    except KeyError as error:
        raise CheckpointError(f"{source}: not a vislang checkpoint (no {error})") from None
    except ConfigError as error:
        raise CheckpointError(f"{Path(source) / TOKENIZER if export else source}: {error}") from None
    try:
        saved = checkpoint.get("classes")
        classes = ClassTask.from_json(saved, str(Path(source) / CLASSES if export else source)) if saved else None
        objective = build_objective(cfg, tokenizer.vocab_size, tokenizer.pad_id, classes)
        state = weights_for_use(checkpoint)
        if cfg.train.lora is not None:  # a LoRA run: its adapters, then merged into plain weights
            inject_adapters(objective, cfg.train.lora, adapted_modules(state))
        objective.load_state_dict(state)
        if merge_adapters(objective):
            cfg = without_lora(cfg)
    except ConfigError as error:
        raise CheckpointError(f"{source}: {error}") from None
    except (KeyError, ValueError, RuntimeError, TypeError) as error:
        raise CheckpointError(f"{source}: not a vislang checkpoint ({first_line(error)})") from None
    return objective.eval(), tokenizer, cfg


def load_objective(path: str | Path, device: str | torch.device = "cpu") -> tuple[Objective, BPETokenizer, RunConfig]:
    """The objective of a vislang checkpoint file, run directory (latest checkpoint) or export."""
    objective, tokenizer, cfg = objective_from_checkpoint(read_model(path), path, is_export(path))
    return objective.to(device), tokenizer, cfg
