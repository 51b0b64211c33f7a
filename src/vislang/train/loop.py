"""The one training loop. It knows devices, precision, checkpoints, logging and the evaluation
schedule; what is learned and how the loss is computed belong to the objective.

Read top to bottom: set up the run directory, the process group (under torchrun), tokenizer,
objective, optimizer and schedule; restore the latest checkpoint when resuming; then step, log,
evaluate and checkpoint; finish with a final evaluation, ``metrics.json`` and ``report.md``.
Under torchrun every rank trains on its own part of each batch (``train.batch_size`` per rank),
the contrastive losses see every rank's samples, all ranks evaluate (each encoding its share of
the evaluation data), and rank 0 logs and writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from vislang.config import RunConfig, to_yaml
from vislang.data import build_sources, tokenizer_corpus, train_loader
from vislang.data.cit import CitCurator
from vislang.errors import ConfigError, TrainingDiverged
from vislang.eval import build_evaluators, evaluate
from vislang.hardware import cpu_has_bf16_units
from vislang.models.vision.vit import set_mask_ratio
from vislang.objectives import build_objective
from vislang.tokenizers import BPETokenizer
from vislang.train.accumulate import all_reduce_gradients, backward
from vislang.train.checkpoint import (
    init_tower_from,
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from vislang.train.distributed import (
    gather_objects,
    init_distributed,
    load_training_state,
    local_device,
    shard_blocks,
    sum_counts,
    training_state,
)
from vislang.train.log import RunLogger
from vislang.train.optim import (
    apply_param_rules,
    build_optimizer,
    build_scheduler,
    clip_gradients,
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


def build_tokenizer(cfg: RunConfig, sources: dict[str, object] | None = None) -> BPETokenizer:
    t, context = cfg.tokenizer, cfg.model.text.context_length
    if cfg.model.text.pretrained:  # a pretrained text encoder brings its own tokenizer
        return BPETokenizer.pretrained(cfg.model.text.pretrained, context)
    if t.kind == "openai":
        return BPETokenizer.openai(t.path, context)
    if t.path:
        return BPETokenizer.load(t.path, context)
    return BPETokenizer.train(tokenizer_corpus(cfg, sources), t.vocab_size, context, t.lowercase)


def all_ranks_have(batch: dict, world: int, device: torch.device) -> bool:
    """Whether every rank's part of the step holds a sample (all ranks skip the step together)."""
    if world == 1:
        return "image" in batch
    usable = torch.tensor(int("image" in batch), device=device)
    dist.all_reduce(usable, op=dist.ReduceOp.MIN)
    return bool(usable)


def prepare_run_dir(cfg: RunConfig, run_dir: Path, resume: bool) -> None:
    """Write config.yaml; refuse to overwrite a run's checkpoints or to resume under another config."""
    config_file = run_dir / "config.yaml"
    if resume and config_file.exists() and config_file.read_text() != to_yaml(cfg):
        raise ConfigError(f"--resume: the config differs from {config_file}; resume with the same config")
    if not resume and list_checkpoints(run_dir / "checkpoints"):
        raise ConfigError(f"{run_dir} already holds checkpoints; pass --resume to continue it or choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    config_file.write_text(to_yaml(cfg))


def train(cfg: RunConfig, run_dir: str | Path, resume: bool = False, quiet: bool = False) -> dict[str, float]:
    """Train ``cfg`` in ``run_dir``; returns the final evaluation metrics."""
    run_dir, t = Path(run_dir), cfg.train
    device = local_device(resolve_device(t.device))
    if t.precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision: fp16 needs a CUDA device (use bf16 or fp32 on the CPU)")
    ranks = init_distributed(device)
    if ranks.main:
        prepare_run_dir(cfg, run_dir, resume)
    if ranks.world > 1:
        dist.barrier()
    torch.set_num_threads(t.threads or os.cpu_count() or 1)
    torch.manual_seed(t.seed)  # the same initial weights on every rank

    # Model, tokenizer, optimizer: restored from the latest checkpoint when resuming.
    checkpoint = load_checkpoint(run_dir) if resume and list_checkpoints(run_dir / "checkpoints") else None
    sources = build_sources(cfg)  # opened (tables read, shards indexed) once for the tokenizer and the loader
    if checkpoint is not None:
        tokenizer = BPETokenizer.from_json(checkpoint["tokenizer"], cfg.model.text.context_length)
    else:
        tokenizer = build_tokenizer(cfg, sources)
    if ranks.main:
        tokenizer.save(run_dir / "tokenizer.json")
    objective = build_objective(cfg, tokenizer.vocab_size, tokenizer.pad_id).to(device)
    init_note = None
    if cfg.model.vision.init_from and checkpoint is None:
        loaded, fresh = init_tower_from(objective.model.vision, cfg.model.vision.init_from, "model.vision.")
        init_note = f"image tower: {loaded} tensors from {cfg.model.vision.init_from}" + (
            f"; fresh: {', '.join(fresh)}" if fresh else ""
        )
    settings = apply_param_rules(objective, param_rules(cfg))  # freezing (LiT), lr scales, decay
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
    n_params = sum(p.numel() for p in objective.parameters())
    n_trainable = sum(p.numel() for p in objective.parameters() if p.requires_grad)

    # Options of the one step: distributed data parallel, compilation, FLIP's unmasked tuning.
    ddp = None
    if ranks.world > 1:
        objective.group = dist.group.WORLD
    if ranks.world > 1 and not t.fsdp:
        ddp = DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)
    if t.compile:
        objective.model.compile()
    mask_ratio, current_mask = cfg.model.vision.mask_ratio, None
    unmask_at = round(t.steps * (1 - t.unmasked_tuning))

    def save(step: int) -> None:
        every_rng = gather_objects(rng_state())
        total_counts = sum_counts(counts)
        model_state, optimizer_state = training_state(objective, optimizer, t.fsdp)
        if not ranks.main:
            return
        state = {
            "step": step,
            "model": model_state,
            "optimizer": optimizer_state,
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": every_rng[0],
            "rng_ranks": every_rng,
            "data": {"next_batch": step, "counts": total_counts},
            "config": cfg.model_dump(mode="json"),
            "tokenizer": tokenizer.to_json(),
        }
        save_checkpoint(state, run_dir / "checkpoints", step, t.keep_checkpoints)

    evaluators = build_evaluators(cfg, tokenizer)  # every rank evaluates its share (eval/encode.py)
    curator = CitCurator(cfg.data.cit, tokenizer, t.batch_size) if cfg.data.cit is not None else None
    batches, data_description = train_loader(cfg, tokenizer, step, device.type == "cuda", sources)
    logger = RunLogger(run_dir, t.steps, step, quiet=quiet or not ranks.main, files=ranks.main)
    logger.write(
        f"vislang: {cfg.objective} objective, {n_params / 1e6:.2f}M parameters"
        + (f" ({n_trainable / 1e6:.2f}M trainable)" if n_trainable < n_params else "")
        + f", {device}"
        + (f" x {ranks.world} ranks" if ranks.world > 1 else "")
        + f", steps {step}->{t.steps}, batch {t.batch_size}"
        + (f" per rank ({t.batch_size * ranks.world} in all)" if ranks.world > 1 else "")
        + (f" in {t.accum_steps} micro-batches" if t.accum_steps > 1 else "")
        + f", {t.precision}"
        + (", compiled" if t.compile else "")
        + (", FSDP (blocks sharded)" if t.fsdp else "")
    )
    logger.write(data_description)
    if init_note:
        logger.write(init_note)
    if t.precision == "bf16" and device.type == "cpu" and cpu_has_bf16_units() is False:
        logger.write(
            "note: this CPU has no bf16 matrix instructions (avx512_bf16, amx_bf16), so bf16 runs emulated "
            "and many times slower than fp32 here; train.precision: fp32 is the fast choice on it"
        )
    window = {"samples": 0, "time": 0.0, "wait": 0.0, "steps": 0}
    history: dict[str, float] = {}
    objective.train()
    try:
        while step < t.steps:
            tick = time.perf_counter()
            batch = next(batches)
            counts.update(batch.pop("counts", {}))
            if not all_ranks_have(batch, ranks.world, device):  # every sample of some rank's part was unusable
                step += 1
                continue
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            if curator is not None:  # CiT: train on the drawn samples closest to the task
                drawn = len(batch["text"])
                batch = curator(objective.model, batch)
                counts.update({"cit/drawn": drawn, "cit/kept": len(batch["text"])})
            ready = time.perf_counter()
            if (wanted := mask_ratio if step < unmask_at else 0.0) != current_mask:
                set_mask_ratio(objective, current_mask := wanted)

            optimizer.zero_grad(set_to_none=True)
            parts = backward(objective, batch, t.accum_steps, lambda: autocast(t.precision, device), scaler.scale, ddp)
            if t.fsdp and ranks.world > 1:  # blocks reduce-scatter their own gradients; the rest here
                all_reduce_gradients(objective)
            loss = parts["loss"]
            if not torch.isfinite(loss) and not scaler.is_enabled():
                raise TrainingDiverged(f"loss is {loss.item()} at step {step + 1}; lower train.lr or check the data")
            scaler.unscale_(optimizer)
            grad_norm = clip_gradients(objective, t.grad_clip if t.grad_clip > 0 else float("inf"))
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1

            done = time.perf_counter()
            window["samples"] += len(batch["image"]) * ranks.world
            window["time"] += done - tick
            window["wait"] += ready - tick
            window["steps"] += 1
            if step % t.log_every == 0 or step == t.steps:
                values = {f"train/{k}": v.item() for k, v in parts.items()}
                values |= {f"train/{k}": v for k, v in objective.log_values().items()}
                values |= {
                    "train/lr": scheduler.get_last_lr()[0],
                    "train/grad_norm": grad_norm.item(),
                    "train/samples_per_s": window["samples"] / window["time"],
                    "train/data_wait_s": window["wait"] / window["steps"],
                }
                if mask_ratio > 0:
                    values["train/mask_ratio"] = current_mask
                total_counts = sum_counts(counts)
                values |= {f"data/{k}": v for k, v in total_counts.items()}
                logger.log(step, values)
                postfix = {
                    "loss": f"{values['train/loss']:.3f}",
                    "lr": f"{values['train/lr']:.1e}",
                    "samples/s": f"{values['train/samples_per_s']:.0f}",
                }
                skipped = sum(v for k, v in total_counts.items() if k.startswith("skipped/"))
                if skipped:
                    postfix["skipped"] = str(skipped)
                logger.progress(window["steps"], postfix)
                window = {"samples": 0, "time": 0.0, "wait": 0.0, "steps": 0}
            if evaluators and (step % t.eval_every == 0 or step == t.steps):
                with autocast(t.precision, device):
                    history = evaluate(objective, evaluators)
                logger.log(step, history)
                logger.write(
                    f"step {step}: "
                    + ", ".join(f"{k} {v:.3f}" for k, v in history.items() if k.endswith(("top1", "acc")))
                )
            if step % t.checkpoint_every == 0 or step == t.steps:
                save(step)
        if evaluators and not history:  # resumed a finished run: evaluate what it left
            history = evaluate(objective, evaluators)
        counts = Counter(sum_counts(counts))
    finally:
        logger.close()

    if not ranks.main:
        return {}
    final = {**history, **{f"data/{k}": float(v) for k, v in counts.items()}}
    (run_dir / "metrics.json").write_text(json.dumps(final, indent=2) + "\n")
    from vislang.report import write_report

    write_report(run_dir)
    return final
