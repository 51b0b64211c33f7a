"""The one training loop. It knows devices, precision, checkpoints, logging and the evaluation
schedule; what is learned and how the loss is computed belong to the objective.

Read top to bottom: :func:`train` sets up the run directory, the process group (under
torchrun), the sources, and the objective with its optimizer (:mod:`vislang.train.setup`,
restored from the latest checkpoint when resuming); then it steps, logs, checkpoints and
evaluates (a checkpoint is written before an evaluation of the same step, so a failing
evaluation never costs training; a stage of ``train.stages`` switches the image size, mask ratio
or context length at its first step: positions resized in place, loader and evaluators rebuilt);
a fine-tune first evaluates its starting weights (step 0,
``eval.at_start``), so the report can say what it cost; it ends with a final evaluation,
``metrics.json`` and ``report.md``. Fine-tuning options reach it only through the trainable parts' generic hooks
(penalties on the weights, what follows a step, the weights evaluation sees; see
:mod:`vislang.train.setup`), never through a branch of their own. Under torchrun every rank trains on its own part of each batch
(``train.batch_size`` per rank), the contrastive losses see every rank's samples, all ranks
evaluate (each encoding its share of the evaluation data), and rank 0 logs and writes.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from vislang.checkpoint import load_latest_readable, save_checkpoint
from vislang.config.train import stage_values
from vislang.data import build_sources, train_loader
from vislang.data.cit import CitCurator
from vislang.errors import ConfigError, TrainingDiverged, VislangError
from vislang.eval import Scheduled, build_evaluators, evaluate
from vislang.experiment import RunConfig, eval_context
from vislang.hardware import cpu_has_bf16_units
from vislang.models.vision.vit import set_mask_ratio
from vislang.report import cost_warnings, headline, write_report
from vislang.restore import as_trained
from vislang.rng import rng_state
from vislang.train.accumulate import all_reduce_gradients, backward
from vislang.train.distributed import Ranks, gather_objects, init_distributed, local_device, sum_counts, training_state
from vislang.train.log import RunLogger
from vislang.train.optim import clip_gradients
from vislang.train.run_dir import RunDirLock, prepare_run_dir
from vislang.train.setup import Trainable, autocast, build_trainable, check_stages, resolve_device


def all_ranks_have(batch: dict, world: int, device: torch.device) -> bool:
    """Whether every rank's part of the step holds a sample (all ranks skip the step together)."""
    if world == 1:
        return "text" in batch  # every usable batch has captions; a texts source has no images
    usable = torch.tensor(int("text" in batch), device=device)
    dist.all_reduce(usable, op=dist.ReduceOp.MIN)
    return bool(usable)


@dataclass
class Window:
    """Throughput since the last log line."""

    samples: int = 0
    time: float = 0.0
    wait: float = 0.0
    steps: int = 0


@dataclass
class Run:
    """One training run in progress: its config, place, parts and counters."""

    cfg: RunConfig
    run_dir: Path
    ranks: Ranks
    device: torch.device
    parts: Trainable
    logger: RunLogger
    evaluators: list[Scheduled]
    lock: RunDirLock | None = None
    ddp: DistributedDataParallel | None = None
    curator: CitCurator | None = None
    inputs: tuple[int, int] = (0, 0)  # the image size and context length the model takes now
    history: dict[str, float] = field(default_factory=dict)
    window: Window = field(default_factory=Window)

    def save(self, step: int) -> None:
        """An atomic checkpoint of everything needed to continue exactly (a collective)."""
        p, t = self.parts, self.cfg.train
        every_rng = gather_objects(rng_state())
        total_counts = sum_counts(p.counts)
        model_state, optimizer_state = training_state(p.objective, p.optimizer, t.fsdp)
        extra = p.extra_state()  # the weight average, the regularizers' anchors
        if not self.ranks.main:
            return
        state = {
            "step": step,
            "model": model_state,
            "optimizer": optimizer_state,
            "scheduler": p.scheduler.state_dict(),
            "scaler": p.scaler.state_dict(),
            "rng": every_rng[0],
            "rng_ranks": every_rng,
            "data": {"next_batch": step, "counts": total_counts},
            "config": self.cfg.model_dump(mode="json"),
            "tokenizer": p.tokenizer.to_json(),
        } | extra
        if p.objective.classes is not None:  # what a head's rows mean (vislang.classes)
            state["classes"] = p.objective.classes.to_json()
        save_checkpoint(state, self.run_dir / "checkpoints", step, t.keep_checkpoints)

    def evaluate(self, step: int, due: list[Scheduled]) -> None:
        """Run the evaluators due at ``step``; log their metrics (the latest of each is kept)."""
        with self.parts.evaluation_weights(), autocast(self.cfg.train.precision, self.device):
            results = evaluate(self.parts.objective, due)
        self.history |= results
        self.logger.log(step, results)
        shown = headline(results)
        if shown:
            self.logger.write(f"step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in shown.items()))


def start(cfg: RunConfig, run_dir: Path, resume: bool, quiet: bool) -> tuple[Run, object]:
    """Everything before the first step: the run, and this rank's batch iterator."""
    t = cfg.train
    check_stages(cfg)
    device = local_device(resolve_device(t.device))
    if t.precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision: fp16 needs a CUDA device (use bf16 or fp32 on the CPU)")
    ranks = init_distributed(device)
    lock, checkpoint, refusal = None, None, None
    if ranks.main:
        try:
            lock, checkpoint = prepare_run_dir(cfg, run_dir, resume)
        except VislangError as error:
            refusal = error
    try:
        if ranks.world > 1:  # every rank stops with rank 0's refusal, none waits for it
            said = [str(refusal) if refusal else None]
            dist.broadcast_object_list(said, src=0)
            refusal = refusal or (ConfigError(said[0]) if said[0] else None)
        if refusal is not None:
            raise refusal
        if resume and not ranks.main:
            checkpoint = load_latest_readable(run_dir / "checkpoints")
        return _start(cfg, run_dir, checkpoint, quiet, device, ranks, lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _start(cfg: RunConfig, run_dir: Path, checkpoint: dict | None, quiet: bool, device: torch.device, ranks: Ranks,
           lock: RunDirLock | None) -> tuple[Run, object]:  # fmt: skip
    """The run's parts, with its directory prepared (and locked on rank 0)."""
    t = cfg.train
    torch.set_num_threads(t.threads or os.cpu_count() or 1)
    torch.manual_seed(t.seed)  # the same initial weights on every rank
    sized = as_trained(cfg, checkpoint["step"]) if checkpoint is not None else cfg  # the checkpoint's stage
    # opened (tables read, shards indexed) once for the tokenizer and the loader
    sources = build_sources(cfg.data, sized.model.vision.image_size, t.seed)
    parts = build_trainable(cfg, run_dir, sources, checkpoint, ranks, device)
    objective = parts.objective
    ddp = None
    if ranks.world > 1:
        objective.group = dist.group.WORLD
    if ranks.world > 1 and not t.fsdp:
        ddp = DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)
    if t.compile:
        objective.model.compile()
    # every rank evaluates its share (eval/encode.py)
    evaluators = build_evaluators(cfg.eval.tasks, eval_context(sized, parts.tokenizer))
    curator = CitCurator(cfg.data.cit, parts.tokenizer, t.batch_size) if cfg.data.cit is not None else None
    batches, description = train_loader(
        cfg.data, sized.model.vision, t, parts.tokenizer, parts.step, device.type == "cuda", sources
    )
    logger = RunLogger(run_dir, t.steps, parts.step, quiet=quiet or not ranks.main, files=ranks.main)
    run = Run(cfg, run_dir, ranks, device, parts, logger, evaluators, lock, ddp, curator)
    run.inputs = (sized.model.vision.image_size, sized.model.text.context_length)
    for line in [header(run), description, *parts.notes, *cpu_notes(cfg, device)]:
        logger.write(line)
    return run, batches


def header(run: Run) -> str:
    """The run's first log line: objective, size, device, steps, batch, options."""
    t, ranks, objective = run.cfg.train, run.ranks, run.parts.objective
    n_params = sum(p.numel() for p in objective.parameters())
    n_trainable = sum(p.numel() for p in objective.parameters() if p.requires_grad)
    return (
        f"vislang: {run.cfg.objective.kind} objective, {n_params / 1e6:.2f}M parameters"
        + (f" ({_count(n_trainable)} trainable, {n_trainable / n_params:.1%})" if n_trainable < n_params else "")
        + f", {run.device}"
        + (f" x {ranks.world} ranks" if ranks.world > 1 else "")
        + f", steps {run.parts.step}->{t.steps}, batch {t.batch_size}"
        + (f" per rank ({t.batch_size * ranks.world} in all)" if ranks.world > 1 else "")
        + (f" in {t.accum_steps} micro-batches" if t.accum_steps > 1 else "")
        + f", {t.precision}"
        + (", compiled" if t.compile else "")
        + (", FSDP (blocks sharded)" if t.fsdp else "")
    )


def _count(n: int) -> str:
    """A parameter count for the log: millions, or the number itself when that would read 0.00M."""
    return f"{n / 1e6:.2f}M" if n >= 10_000 else f"{n:,}"


def cpu_notes(cfg: RunConfig, device: torch.device) -> list[str]:
    if cfg.train.precision == "bf16" and device.type == "cpu" and cpu_has_bf16_units() is False:
        return [
            "note: this CPU has no bf16 matrix instructions (avx512_bf16, amx_bf16), so bf16 runs emulated "
            "and many times slower than fp32 here; train.precision: fp32 is the fast choice on it"
        ]
    return []


def optimizer_step(run: Run, batch: dict, step: int) -> tuple[dict, torch.Tensor]:
    """Forward, backward (accumulated as configured) and one optimizer update: (loss parts, grad norm)."""
    t, p = run.cfg.train, run.parts
    p.optimizer.zero_grad(set_to_none=True)
    parts = backward(p.objective, batch, t.accum_steps, lambda: autocast(t.precision, run.device), p.scaler.scale,
                     run.ddp)  # fmt: skip
    if t.fsdp and run.ranks.world > 1:  # blocks reduce-scatter their own gradients; the rest here
        all_reduce_gradients(p.objective)
    for name, penalty in p.regularizers.items():  # terms on the weights alone, the same on every rank
        value = penalty()
        p.scaler.scale(value).backward()
        parts[name] = value.detach()
        parts["loss"] = parts["loss"] + parts[name]
    loss = parts["loss"]
    if not torch.isfinite(loss) and not p.scaler.is_enabled():
        raise TrainingDiverged(f"loss is {loss.item()} at step {step + 1}; lower train.lr or check the data")
    p.scaler.unscale_(p.optimizer)
    grad_norm = clip_gradients(p.objective, t.grad_clip if t.grad_clip > 0 else float("inf"))
    p.scaler.step(p.optimizer)
    p.scaler.update()
    p.scheduler.step()
    p.after_step(step + 1)  # the weight average
    return parts, grad_norm


def log_step(run: Run, step: int, parts: dict, grad_norm: torch.Tensor, mask: float | None) -> None:
    """The training line of ``step``: loss parts, learning rate, throughput, data counters."""
    w, p = run.window, run.parts
    values = {f"train/{k}": v.item() for k, v in parts.items()}
    values |= {f"train/{k}": v for k, v in p.objective.log_values().items()}
    values |= {
        # train.lr on its schedule; groups scaled by rules or layer decay run at multiples of it
        "train/lr": run.cfg.train.lr * p.scheduler.lr_lambdas[0](p.scheduler.last_epoch),
        "train/grad_norm": grad_norm.item(),
        "train/samples_per_s": w.samples / w.time,
        "train/data_wait_s": w.wait / w.steps,
    }
    if run.cfg.model.vision.mask_ratio > 0 or any(s.mask_ratio for s in run.cfg.train.stages):
        values["train/mask_ratio"] = mask
    total_counts = sum_counts(p.counts)
    values |= {f"data/{k}": v for k, v in total_counts.items()}
    run.logger.log(step, values)
    postfix = {
        "loss": f"{values['train/loss']:.3f}",
        "lr": f"{values['train/lr']:.1e}",
        "samples/s": f"{values['train/samples_per_s']:.0f}",
    }
    skipped = sum(v for k, v in total_counts.items() if k.startswith("skipped/"))
    if skipped:
        postfix["skipped"] = str(skipped)
    run.logger.progress(w.steps, postfix)
    run.window = Window()


def enter_stage(run: Run, step: int, batches):
    """The batch iterator for the step after ``step`` steps: when a stage (``train.stages``)
    changes the input sizes there, the model's positions (and their optimizer moments) are
    resized in place, and the loader and evaluators rebuilt at the new sizes; else ``batches``."""
    staged = as_trained(run.cfg, step + 1)  # the model that trains step + 1
    v, t = staged.model.vision, run.cfg.train
    inputs = (v.image_size, staged.model.text.context_length)
    if inputs == run.inputs:
        return batches
    lines = run.parts.resize_inputs(*inputs)
    run.inputs = inputs
    if run.ddp is not None:  # its buckets were laid out for the old shapes
        index = [run.device.index] if run.device.type == "cuda" else None
        run.ddp = DistributedDataParallel(run.parts.objective, device_ids=index)
    run.evaluators = build_evaluators(run.cfg.eval.tasks, eval_context(staged, run.parts.tokenizer))
    del batches  # its workers stop before the new loader's start
    sources = build_sources(run.cfg.data, v.image_size, t.seed)
    batches, _ = train_loader(run.cfg.data, v, t, run.parts.tokenizer, step, run.device.type == "cuda", sources)
    resized = "; ".join(lines) or "no positions to resize"
    run.logger.write(f"step {step}: stage of {v.image_size} px, context length {inputs[1]}: {resized}")
    return batches


def mask_at(cfg: RunConfig, step: int) -> float:
    """The FLIP mask ratio of the step after ``step`` steps: the model's, a stage's, or 0 in
    the unmasked tuning at the end (``train.unmasked_tuning``)."""
    t = cfg.train
    if step >= round(t.steps * (1 - t.unmasked_tuning)):
        return 0.0
    return stage_values(t.stages, step).get("mask_ratio", cfg.model.vision.mask_ratio)


def steps(run: Run, batches) -> None:
    """Train from the run's step to ``train.steps``."""
    t, p = run.cfg.train, run.parts
    current_mask = None
    p.objective.train()
    step = p.step
    while step < t.steps:
        tick = time.perf_counter()
        batches = enter_stage(run, step, batches)
        batch = next(batches)
        p.counts.update(batch.pop("counts", {}))
        if not all_ranks_have(batch, run.ranks.world, run.device):  # every sample of some rank's part was unusable
            step += 1
            continue
        batch = {k: v.to(run.device, non_blocking=True) for k, v in batch.items()}
        if run.curator is not None:  # CiT: train on the drawn samples closest to the task
            drawn = len(batch["text"])
            batch = run.curator(p.objective.model, batch)
            p.counts.update({"cit/drawn": drawn, "cit/kept": len(batch["text"])})
        ready = time.perf_counter()
        if (wanted := mask_at(run.cfg, step)) != current_mask:
            if current_mask is not None:  # a stage or the unmasked tuning changed it
                run.logger.write(f"step {step}: mask ratio {current_mask:g} -> {wanted:g}")
            set_mask_ratio(p.objective, current_mask := wanted)
        parts, grad_norm = optimizer_step(run, batch, step)
        step += 1
        done = time.perf_counter()
        w = run.window
        w.samples, w.time, w.wait, w.steps = (w.samples + len(batch["text"]) * run.ranks.world,
                                              w.time + done - tick, w.wait + ready - tick, w.steps + 1)  # fmt: skip
        last = step == t.steps
        if step % t.log_every == 0 or last:
            log_step(run, step, parts, grad_norm, current_mask)
        if step % t.checkpoint_every == 0 or last:
            run.save(step)
        due = [e for e in run.evaluators if e.due(step, t.eval_every, last)]
        if due:
            run.evaluate(step, due)


def evaluates_at_start(run: Run) -> bool:
    """Whether to evaluate before the first step (``eval.at_start``; by default when fine-tuning):
    the report's fine-tuning cost compares with it. Only a run starting at step 0 does: a resumed
    run's metrics.jsonl already holds its step-0 evaluation."""
    return bool(run.evaluators) and run.parts.step == 0 and run.cfg.eval.evaluates_at_start(run.cfg.train)


def train(cfg: RunConfig, run_dir: str | Path, resume: bool = False, quiet: bool = False) -> dict[str, float]:
    """Train ``cfg`` in ``run_dir``; returns the final evaluation metrics (rank 0; {} elsewhere)."""
    run, batches = start(cfg, Path(run_dir), resume, quiet)
    try:
        if evaluates_at_start(run):
            run.evaluate(0, run.evaluators)
        steps(run, batches)
        if run.evaluators and not run.history:  # resumed a finished run: evaluate what it left (not logged again)
            with run.parts.evaluation_weights(), autocast(cfg.train.precision, run.device):
                run.history = evaluate(run.parts.objective, run.evaluators)
        run.parts.counts = Counter(sum_counts(run.parts.counts))
        final = finish(run) if run.ranks.main else {}
        if run.ranks.world > 1:  # no rank leaves while another still uses the process group
            dist.barrier()
        return final
    finally:
        del batches  # the loader's workers stop here, not at interpreter exit
        run.logger.close()
        if run.lock is not None:
            run.lock.release()
        if run.ranks.world > 1 and dist.is_initialized():
            # a process group left to interpreter exit can abort the process as it is torn down
            dist.destroy_process_group()


def finish(run: Run) -> dict[str, float]:
    """Rank 0's end of a run: metrics.json, report.md and its warnings in the log."""
    final = {**run.history, **{f"data/{k}": float(v) for k, v in run.parts.counts.items()}}
    (run.run_dir / "metrics.json").write_text(json.dumps(final, indent=2) + "\n")
    write_report(run.run_dir)
    for line in cost_warnings(run.run_dir):  # the report's warnings, for whoever reads only the log
        run.logger.write(line)
    return final
