"""Cost of exact accumulation (GradCache): one step of batch K*B in K micro-batches against K
ordinary steps of batch B, same model, same precision, measured in one run.

Exact accumulation computes every micro-batch's embeddings twice (once without gradients), so
the expected ratio is about (1 forward + 1 forward + 1 backward) / (1 forward + 1 backward),
~1.33x when a backward costs two forwards. The issue's bar is <= 1.4x. Peak memory is that of a
B-sample step plus the K*B cached embeddings (on CUDA, ``torch.cuda.max_memory_allocated``).

Usage: python bench/grad_cache.py [--preset tiny|small] [--micro 64] [--accum 4] [--steps 3]
       [--precision fp32|bf16] [--device cpu|cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time

import torch

from vislang.experiment import build_config, build_objective
from vislang.train.accumulate import backward

VOCAB = 512


def make_batch(cfg, n: int, device: torch.device) -> dict[str, torch.Tensor]:
    size, length = cfg.model.vision.image_size, cfg.model.text.context_length
    text = torch.randint(3, VOCAB, (n, length))
    text[:, length // 2 :] = 0
    return {"image": torch.randn(n, 3, size, size, device=device), "text": text.to(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--micro", type=int, default=64)
    parser.add_argument("--accum", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: all cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    device = torch.device(args.device)
    cfg = build_config({"model": {"preset": args.preset}}, ["model.vision.stem=patch"])
    torch.manual_seed(0)
    objective = build_objective(cfg, VOCAB, 0).to(device)
    optimizer = torch.optim.AdamW(objective.parameters(), lr=1e-4)

    def precision():
        if args.precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    big, small = make_batch(cfg, args.micro * args.accum, device), make_batch(cfg, args.micro, device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def accumulated() -> None:
        optimizer.zero_grad(set_to_none=True)
        backward(objective, big, args.accum, precision)
        optimizer.step()

    def ordinary() -> None:
        for _ in range(args.accum):
            optimizer.zero_grad(set_to_none=True)
            backward(objective, small, 1, precision)
            optimizer.step()

    def timed(fn) -> float:
        fn()  # warm-up
        sync()
        start = time.perf_counter()
        for _ in range(args.steps):
            fn()
        sync()
        return (time.perf_counter() - start) / args.steps

    results: dict[str, list[float]] = {"accumulated": [], "ordinary": []}
    for _ in range(args.rounds):  # alternate, so background load hits both alike
        results["accumulated"].append(timed(accumulated))
        results["ordinary"].append(timed(ordinary))
    acc, ordi = statistics.median(results["accumulated"]), statistics.median(results["ordinary"])
    n = args.micro * args.accum
    params = sum(p.numel() for p in objective.parameters()) / 1e6
    print(f"{args.preset} ({params:.1f}M params), {args.precision}, {device}: {n} samples per step")
    print(f"  exact accumulation, {args.accum} x {args.micro}: {acc * 1000:8.1f} ms  ({n / acc:7.1f} samples/s)")
    print(f"  {args.accum} ordinary steps of {args.micro}:        {ordi * 1000:8.1f} ms  ({n / ordi:7.1f} samples/s)")
    print(f"  overhead: {acc / ordi:.2f}x (target <= 1.4x)")
    if device.type == "cuda":
        print(f"  peak memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
