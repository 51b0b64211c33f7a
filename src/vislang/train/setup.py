"""What the training loop sets up before its first step: device, tokenizer, and
the objective with its optimizer, schedule and scaler, fresh or restored from a checkpoint.

The order of the random draws here is part of a run's identity (the same seed gives the same
weights), so it is kept as it is: the global seed, the tokenizer, the objective's weights, the
optimizer; then, under torchrun, a per-rank seed; then, when resuming, the saved RNG state.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from vislang.data import Source, tokenizer_corpus
from vislang.errors import ConfigError
from vislang.experiment import RunConfig, build_objective
from vislang.objectives import Objective
from vislang.rng import set_rng_state
from vislang.tokenizers import BPETokenizer
from vislang.train.distributed import Ranks, load_training_state, shard_blocks
from vislang.train.init_from import init_tower_from
from vislang.train.optim import (
    apply_param_rules,
    build_optimizer,
    build_scheduler,
    freeze_norm_statistics,
    param_rules,
)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} requested but CUDA is not available")
    return device


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def build_tokenizer(cfg: RunConfig, sources: dict[str, Source]) -> BPETokenizer:
    t, context = cfg.tokenizer, cfg.model.text.context_length
    if cfg.model.text.pretrained:  # a pretrained text encoder brings its own tokenizer
        return BPETokenizer.pretrained(cfg.model.text.pretrained, context)
    if t.kind == "openai":
        return BPETokenizer.openai(t.path, context)
    if t.path:
        return BPETokenizer.load(t.path, context)
    return BPETokenizer.train(tokenizer_corpus(sources, t.train_texts), t.vocab_size, context, t.lowercase)


@dataclass
class Trainable:
    """The objective and what updates it, at the step where training (re)starts."""

    objective: Objective
    tokenizer: BPETokenizer
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    step: int
    counts: Counter
    notes: list[str]


def build_trainable(
    cfg: RunConfig,
    run_dir: Path,
    sources: dict[str, Source],
    checkpoint: dict | None,
    ranks: Ranks,
    device: torch.device,
) -> Trainable:
    """A fresh objective (seeded by ``train.seed``) or, given one, the state of a checkpoint."""
    t = cfg.train
    if checkpoint is not None:
        tokenizer = BPETokenizer.from_json(checkpoint["tokenizer"], cfg.model.text.context_length)
    else:
        tokenizer = build_tokenizer(cfg, sources)
    if ranks.main:
        tokenizer.save(run_dir / "tokenizer.json")
    objective = build_objective(cfg, tokenizer.vocab_size, tokenizer.pad_id).to(device)
    notes = []
    if cfg.model.vision.init_from and checkpoint is None:
        loaded, fresh = init_tower_from(objective.model.vision, cfg.model.vision.init_from, "model.vision.")
        notes.append(
            f"image tower: {loaded} tensors from {cfg.model.vision.init_from}"
            + (f"; fresh: {', '.join(fresh)}" if fresh else "")
        )
    settings = apply_param_rules(objective, param_rules(cfg.model, t))  # freezing (LiT), lr scales, decay
    objective.frozen_norms = tuple(freeze_norm_statistics(objective))
    if t.fsdp:
        shard_blocks(objective)  # before the optimizer: it must hold the sharded parameters
    optimizer = build_optimizer(objective, t, settings)
    scheduler = build_scheduler(optimizer, t)
    scaler = torch.amp.GradScaler(device.type, enabled=t.precision == "fp16")
    step = 0
    if checkpoint is not None:
        load_training_state(objective, optimizer, checkpoint["model"], checkpoint["optimizer"], t.fsdp)
        scheduler.load_state_dict(checkpoint["scheduler"])
        if "scaler" in checkpoint:
            scaler.load_state_dict(checkpoint["scaler"])
        step = checkpoint["step"]
    if ranks.world > 1:
        torch.manual_seed(t.seed + 7919 * ranks.rank)  # FLIP masks differ between ranks
    if checkpoint is not None:
        states = checkpoint.get("rng_ranks", [checkpoint["rng"]])
        set_rng_state(states[ranks.rank] if ranks.rank < len(states) else states[0])
    # Data counters from the batches ("skipped/<reason>", "negatives/<rule>"), summed over ranks
    # when logged and saved; a resumed run's totals restart on rank 0.
    counts: Counter[str] = Counter(checkpoint["data"]["counts"] if checkpoint and ranks.main else {})
    return Trainable(objective, tokenizer, optimizer, scheduler, scaler, step, counts, notes)
