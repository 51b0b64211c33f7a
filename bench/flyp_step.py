"""Does a FLYP step (``objective: flyp`` on a labelled source) cost more than an ordinary CLIP
step at the same batch, on this machine?

Two measurements, both on the default (demo-sized) model, fp32 on the CPU:

1. ``step``: the optimizer step alone. The objective and its AdamW come from ``build_trainable``
   as a run builds them: CLIP on the world's captions (the default config) against FLYP on
   ``data.sources=[{kind: labelled, dataset: world, world_task: shape}]`` (6 classes). Both get
   the same seeded random images and token ids; FLYP also gets labels drawn from the 6 classes
   (repeated in the batch, as in a real FLYP batch, so the same-class masking of
   ``clip_loss(classes=...)`` has work to do) and each image's text is its class's. Timed:
   forward, loss, backward, AdamW step; the median per step after two untimed steps (and the
   fastest step, less sensitive to other load on a shared machine).
2. ``loop``: the whole loop, ``vislang.train.loop.train`` for ``--steps`` steps with
   ``eval.tasks=[]`` and the default ``data.num_workers`` (1): batch building, tokenizer
   training, the final checkpoint and report included. Read: ``train/samples_per_s`` from the
   run's ``metrics.jsonl`` (median over the log lines after the first, which holds the warm-up)
   and the wall time of the ``train`` call.

Every (measurement, variant) runs in its own process with ``--threads`` torch threads; CLIP and
FLYP alternate over ``--rounds`` rounds (their order flips each round) and the medians are
printed with the ratios flyp/clip, then one JSON line with everything.

    python bench/flyp_step.py [--batch 128] [--steps 60] [--rounds 3] [--threads 2]

Quick smoke test: ``python bench/flyp_step.py --rounds 1 --steps 20`` (about 1 minute on the
2-core development machine with ``--threads 1``). The tokenizer is trained per run, on the world's
captions or on the class prompts, so the two models' vocabularies (and parameter counts) differ a
little. With other work on the machine use ``--threads 1``: with 2 threads on 2 busy cores the
smoke run's steps went from ~0.2 s to ~3.4 s (both variants, and the loop alike).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

VARIANTS = ("clip", "flyp")
MEASURES = ("step", "loop")
LABELLED = "data.sources=[{kind: labelled, dataset: world, world_task: shape}]"
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
WARMUP = 2  # untimed steps of the step measurement: the first ones allocate the optimizer state


def machine() -> dict:
    """The CPU's model name, core count and the matrix-relevant flags it has."""
    name, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == "unknown":
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"cpu": name, "cores": os.cpu_count(), "torch": torch.__version__} | {f: f in flags for f in FLAGS}


def overrides(variant: str) -> list[str]:
    """The config overrides of a variant: none for CLIP, FLYP's objective and labelled source."""
    return ["eval.tasks=[]"] + (["objective=flyp", LABELLED] if variant == "flyp" else [])


def one_step(variant: str, batch: int, steps: int, threads: int) -> dict:
    """Median forward+backward+AdamW step of ``variant`` on seeded random inputs."""
    from vislang.data import build_sources
    from vislang.experiment import build_config
    from vislang.train.distributed import Ranks
    from vislang.train.setup import build_trainable, run_classes

    torch.set_num_threads(threads)
    cfg = build_config({}, overrides(variant))
    with tempfile.TemporaryDirectory() as tmp:
        sources = build_sources(cfg.data, cfg.model.vision.image_size, cfg.train.seed)
        parts = build_trainable(cfg, Path(tmp), sources, None, Ranks(), torch.device("cpu"))
    classes = run_classes(sources, None)
    objective, optimizer = parts.objective, parts.optimizer
    objective.train()
    size, context = cfg.model.vision.image_size, cfg.model.text.context_length
    vocab = parts.tokenizer.vocab_size
    g = torch.Generator().manual_seed(0)
    data = {
        "image": torch.randn(batch, 3, size, size, generator=g),
        "text": torch.randint(3, vocab, (batch, context), generator=g),
    }
    if variant == "flyp":
        n_classes = len(classes)
        labels = torch.randint(0, n_classes, (batch,), generator=g)
        prompts = torch.randint(3, vocab, (n_classes, context), generator=g)
        data |= {"label": labels, "text": prompts[labels]}  # one prompt per class and batch
    times = []
    for i in range(steps + WARMUP):
        start = time.perf_counter()
        loss = objective.loss(data)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= WARMUP:
            times.append(time.perf_counter() - start)
    params = sum(p.numel() for p in objective.parameters())
    ms = {"step_ms": 1000 * statistics.median(times), "min_ms": 1000 * min(times)}
    return ms | {"params": params, "loss": loss.item()}


def one_loop(variant: str, batch: int, steps: int, threads: int) -> dict:
    """Samples/s (from metrics.jsonl) and wall time of ``train`` on ``variant``'s config."""
    from vislang.experiment import build_config
    from vislang.train.loop import train

    log_every = max(1, steps // 6)
    cfg = build_config(
        {},
        overrides(variant)
        + [
            f"train.steps={steps}",
            f"train.batch_size={batch}",
            f"train.threads={threads}",
            f"train.log_every={log_every}",
            f"train.checkpoint_every={steps}",
        ],
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train(cfg, tmp, quiet=True)
        wall = time.perf_counter() - start
        lines = [json.loads(x) for x in (Path(tmp) / "metrics.jsonl").read_text().splitlines() if x.strip()]
    rates = [r["train/samples_per_s"] for r in lines if "train/samples_per_s" in r]
    kept = rates[1:] or rates  # the first window holds the warm-up
    return {"samples_per_s": statistics.median(kept), "wall_s": wall, "log_lines": len(rates)}


def child(args: argparse.Namespace) -> None:
    measure, variant = args.variant.split(":")
    run = one_step if measure == "step" else one_loop
    steps = args.step_steps if measure == "step" else args.steps
    print(json.dumps(run(variant, args.batch, steps, args.threads)))


def collect(args: argparse.Namespace) -> dict[str, dict[str, list[dict]]]:
    """Every (measurement, variant) in its own process, the variants alternating over rounds."""
    runs: dict[str, dict[str, list[dict]]] = {m: {v: [] for v in VARIANTS} for m in MEASURES}
    for r in range(args.rounds):
        for measure in MEASURES:
            order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                command = [sys.executable, __file__, "--variant", f"{measure}:{variant}", *sys.argv[1:]]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    sys.stderr.write(done.stderr)
                    raise SystemExit(f"{measure}:{variant} failed (exit {done.returncode})")
                row = json.loads(done.stdout.strip().splitlines()[-1])
                runs[measure][variant].append(row)
                print(f"  round {r + 1} {measure:4s} {variant}: {row}", flush=True)
    return runs


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def summarise(runs: dict[str, dict[str, list[dict]]]) -> dict:
    step, loop = runs["step"], runs["loop"]
    out: dict = {"step": {}, "loop": {}}
    for v in VARIANTS:
        out["step"][v] = {
            "step_ms": round(median(step[v], "step_ms"), 2),
            "min_ms": round(min(r["min_ms"] for r in step[v]), 2),
            "params": step[v][0]["params"],
        }
        out["loop"][v] = {
            "samples_per_s": round(median(loop[v], "samples_per_s"), 1),
            "wall_s": round(median(loop[v], "wall_s"), 2),
        }
    out["step"]["ratio_flyp_over_clip"] = round(out["step"]["flyp"]["step_ms"] / out["step"]["clip"]["step_ms"], 3)
    rate = out["loop"]["flyp"]["samples_per_s"] / out["loop"]["clip"]["samples_per_s"]
    out["loop"]["samples_per_s_ratio_flyp_over_clip"] = round(rate, 3)
    out["loop"]["wall_ratio_flyp_over_clip"] = round(out["loop"]["flyp"]["wall_s"] / out["loop"]["clip"]["wall_s"], 3)
    return out


def report(info: dict, args: argparse.Namespace, out: dict) -> None:
    s, lp = out["step"], out["loop"]
    print(f"\nbatch {args.batch}, {args.threads} threads, {args.rounds} round(s); medians")
    print(f"optimizer step ({args.step_steps} timed steps, {s['clip']['params']:,} parameters):")
    for v in VARIANTS:
        print(f"  {v:5s} {s[v]['step_ms']:9.2f} ms/step (fastest step {s[v]['min_ms']:.2f} ms)")
    print(f"  ratio flyp/clip: {s['ratio_flyp_over_clip']:.3f}")
    print(f"whole loop ({args.steps} steps, data.num_workers 1):")
    for v in VARIANTS:
        print(f"  {v:5s} {lp[v]['samples_per_s']:9.1f} samples/s  {lp[v]['wall_s']:7.2f} s wall")
    print(
        f"  ratio flyp/clip: samples/s {lp['samples_per_s_ratio_flyp_over_clip']:.3f}, "
        f"wall {lp['wall_ratio_flyp_over_clip']:.3f}"
    )
    settings = {"batch": args.batch, "steps": args.steps, "step_steps": args.step_steps, "rounds": args.rounds,
                "threads": args.threads}  # fmt: skip
    print(json.dumps({"machine": info, "settings": settings, **out}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60, help="training steps of the whole-loop run")
    parser.add_argument("--step-steps", type=int, default=10, help="timed steps of the optimizer-step measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        child(args)
        return
    info = machine()
    flags = " ".join(f"{f}={'yes' if info[f] else 'no'}" for f in FLAGS)
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}; {flags}", flush=True)
    report(info, args, summarise(collect(args)))


if __name__ == "__main__":
    main()
