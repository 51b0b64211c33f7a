"""AdamW with parameter groups from rules over parameter names (freezing, learning-rate scale,
weight decay: LiT is one rule), layer-wise learning-rate decay by block depth, and the warmup +
cosine learning-rate schedule."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
from torch import nn

from vislang.config import ModelConfig, ParamRule, TrainConfig
from vislang.errors import ConfigError
from vislang.models.layers import Transformer


def param_rules(model: ModelConfig, train: TrainConfig, objective_rules: Sequence[ParamRule] = ()) -> list[ParamRule]:
    """The towers' lock shorthands as rules, then the objective's own, then ``train.param_rules``."""
    rules = []
    for tower, tcfg in (("vision", model.vision), ("text", model.text)):
        if not tcfg.lock:
            continue
        rules.append(ParamRule(match=rf"^model\.{tower}\.", freeze=True))
        n = min(tcfg.unlocked_blocks, tcfg.depth)
        if n:
            blocks = "|".join(str(i) for i in range(tcfg.depth - n, tcfg.depth))
            rules.append(ParamRule(match=rf"^model\.{tower}\.transformer\.blocks\.({blocks})\.", freeze=False))
            rules.append(ParamRule(match=rf"^model\.{tower}\.(ln_post|ln_final|attn_pool|proj)\.", freeze=False))
    return rules + list(objective_rules) + list(train.param_rules)


def apply_param_rules(model: nn.Module, rules: list[ParamRule]) -> dict[str, dict]:
    """Freeze what the rules freeze (``requires_grad``) and return each trainable parameter's
    ``lr_scale`` and ``weight_decay`` overrides. A rule that matches no parameter is an error."""
    settings: dict[str, dict] = {}
    used = [False] * len(rules)
    for name, param in model.named_parameters():
        setting = {"freeze": False, "lr_scale": 1.0, "weight_decay": None}
        for i, rule in enumerate(rules):
            if re.search(rule.match, name):
                used[i] = True
                setting |= {k: v for k, v in rule.model_dump().items() if k != "match" and v is not None}
        param.requires_grad_(not setting["freeze"])
        if not setting["freeze"]:
            settings[name] = setting
    unused = [rule.match for rule, hit in zip(rules, used) if not hit]
    if unused:
        raise ConfigError(f"train.param_rules: {unused[0]!r} matches no parameter of the model")
    if not settings:
        raise ConfigError("train.param_rules: every parameter is frozen; nothing would train")
    return settings


def layer_decay_scales(module: nn.Module, decay: float) -> tuple[dict[str, float], list[str]]:
    """Each parameter's learning-rate multiplier under layer-wise decay, BEiT's convention (as in
    timm): in a tower whose ``transformer.blocks`` hold ``D`` blocks, block ``i`` (from 0 at the
    input) gets ``decay ** (D - i)``, and the tower's embedding layers ``decay ** (D + 1)``, so the
    layers nearest the input, which hold the most general features, move least. Everything else
    (final norms, pooling, projections, the logit scale, decoders, towers without vislang blocks
    such as timm or Hugging Face ones) keeps 1 and is left out of the map.

    The block index comes from the module structure, not from names: a tower is any module whose
    ``transformer`` child is a :class:`~vislang.models.layers.Transformer`; its embedding layers
    are its own parameters (class token, position embedding) and the children registered before
    the transformer (stem, token embedding, pre-norm); the children after it are its heads.
    Returns the multipliers by parameter name and a description of the towers found."""
    scales: dict[str, float] = {}
    towers = []
    for prefix, tower in module.named_modules():
        transformer = getattr(tower, "transformer", None)
        if not isinstance(transformer, Transformer):
            continue
        depth, base = len(transformer.blocks), f"{prefix}." if prefix else ""
        towers.append(f"{base}transformer ({depth} blocks)")
        for name, _ in tower.named_parameters(recurse=False):
            scales[base + name] = decay ** (depth + 1)
        for child_name, child in tower.named_children():
            if child is transformer:
                break
            for name, _ in child.named_parameters():
                scales[f"{base}{child_name}.{name}"] = decay ** (depth + 1)
        for i, block in enumerate(transformer.blocks):
            for name, _ in block.named_parameters():
                scales[f"{base}transformer.blocks.{i}.{name}"] = decay ** (depth - i)
    return scales, towers


def apply_layer_decay(module: nn.Module, settings: dict[str, dict], decay: float) -> str:
    """Multiply the trainable parameters' ``lr_scale`` (from the rules) by their layer-decay
    multiplier, in place; returns the run-log note naming the towers it scaled."""
    scales, towers = layer_decay_scales(module, decay)
    if not towers:
        raise ConfigError("train.layer_decay: no tower of this model has vislang transformer blocks to scale")
    for name, setting in settings.items():
        setting["lr_scale"] = setting["lr_scale"] * scales.get(name, 1.0)
    return f"layer decay {decay}: " + ", ".join(towers) + " (block i of D: lr x decay^(D-i), embeddings D+1)"


def param_groups(model: nn.Module, weight_decay: float, settings: dict[str, dict] | None = None) -> list[dict]:
    """Trainable parameters grouped by (learning-rate scale, weight decay). By default weight
    decay falls on matrices only: gains, biases and the scalar logit scale/bias get none."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        setting = (settings or {}).get(name, {})
        decay = setting.get("weight_decay")
        if decay is None:
            decay = weight_decay if param.ndim >= 2 else 0.0
        groups.setdefault((setting.get("lr_scale", 1.0), decay), []).append(param)
    return [{"params": ps, "lr_scale": scale, "weight_decay": decay} for (scale, decay), ps in groups.items()]


def build_optimizer(model: nn.Module, cfg: TrainConfig, settings: dict[str, dict] | None = None) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; the fused kernel (one pass over all parameters, ~8x
    faster than the per-tensor loop on CPU, see BENCHMARKS.md) unless FSDP shards them."""
    from torch.distributed.tensor import DTensor

    groups = param_groups(model, cfg.weight_decay, settings)
    for group in groups:
        group["lr"] = cfg.lr * group["lr_scale"]
    params = [p for g in groups for p in g["params"]]
    fused = all(p.device.type in ("cpu", "cuda") and not isinstance(p, DTensor) for p in params)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused or None)


def freeze_norm_statistics(model: nn.Module) -> list[nn.Module]:
    """BatchNorm layers whose parameters are all frozen: their running statistics stay fixed too
    (the loop keeps them in eval mode)."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters())
    ]


def lr_factor(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Linear warmup from lr/warmup to lr over ``warmup`` steps, then cosine to ``lr * min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
    )


def clip_gradients(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Scale all gradients so that their global norm is at most ``max_norm``; returns the norm
    before clipping. Works when FSDP shards some parameters (DTensors) and not others."""
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in model.parameters() if p.grad is not None]
    sharded = [g for g in grads if isinstance(g, DTensor)]
    plain = [g for g in grads if not isinstance(g, DTensor)]
    squares = []
    for group in (sharded, plain):
        if group:
            norm = torch.nn.utils.get_total_norm(group)
            squares.append((norm.full_tensor() if isinstance(norm, DTensor) else norm) ** 2)
    total = torch.stack(squares).sum().sqrt() if squares else torch.zeros(())
    for group in (sharded, plain):
        if group:
            torch.nn.utils.clip_grads_with_norm_(group, max_norm, total)
    return total
