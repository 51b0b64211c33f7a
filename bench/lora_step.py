"""Step time and peak memory of a LoRA fine-tune (``train.lora``) against full fine-tuning of the
same model, on this machine.

A full training step (forward, CLIP loss, backward, AdamW) on random inputs, through the same
``build_trainable`` the loop uses, so the adapters, frozen parameters and optimizer groups are
the run's own. Each variant runs in its own process, so its peak resident memory (ru_maxrss) is
its own; the variants alternate over rounds and the medians are printed.

    python bench/lora_step.py [--width 512] [--depth 6] [--batch 64] [--steps 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def one(variant: str, width: int, depth: int, batch: int, steps: int) -> dict:
    from vislang.data import build_sources
    from vislang.experiment import build_config
    from vislang.train.distributed import Ranks
    from vislang.train.setup import build_trainable

    torch.set_num_threads(2)
    sizes = [f"model.{t}.{k}={v}" for t in ("vision", "text") for k, v in (("width", width), ("depth", depth))]
    overrides = sizes + ["model.vision.heads=8", "model.text.heads=8", "model.embed_dim=256", "eval.tasks=[]"]
    if variant == "lora":
        overrides.append("train.lora={rank: 8}")
    cfg = build_config({}, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        sources = build_sources(cfg.data, cfg.model.vision.image_size, cfg.train.seed)
        parts = build_trainable(cfg, Path(tmp), sources, None, Ranks(), torch.device("cpu"))
    objective, optimizer = parts.objective, parts.optimizer
    size = cfg.model.vision.image_size
    batch_data = {
        "image": torch.randn(batch, 3, size, size),
        "text": torch.randint(3, 300, (batch, cfg.model.text.context_length)),
    }
    trainable = sum(p.numel() for p in objective.parameters() if p.requires_grad)
    total = sum(p.numel() for p in objective.parameters())
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        loss = objective.loss(batch_data)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= 2:  # the first two steps allocate the optimizer state
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"step_s": statistics.median(times), "peak_mib": peak, "trainable": trainable, "total": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(one(args.variant, args.width, args.depth, args.batch, args.steps)))
        return
    runs: dict[str, list[dict]] = {"full": [], "lora": []}
    for _ in range(args.rounds):
        for variant in runs:
            command = [sys.executable, __file__, "--variant", variant, *sys.argv[1:]]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            runs[variant].append(json.loads(out.strip().splitlines()[-1]))
    summary = {}
    for variant, rows in runs.items():
        summary[variant] = {
            "step_s": round(statistics.median(r["step_s"] for r in rows), 4),
            "peak_mib": round(statistics.median(r["peak_mib"] for r in rows), 1),
            "trainable": rows[0]["trainable"],
            "total": rows[0]["total"],
        }
    summary["step_ratio_lora_over_full"] = round(summary["lora"]["step_s"] / summary["full"]["step_s"], 3)
    summary["peak_ratio_lora_over_full"] = round(summary["lora"]["peak_mib"] / summary["full"]["peak_mib"], 3)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
