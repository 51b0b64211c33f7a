"""Training-step throughput of the demo model on this machine: attention implementation x precision.

Prints samples/s for a full step (forward, loss, backward, AdamW) on random inputs of the demo's
shapes, so the choice behind ``model.attn_impl: auto`` and the demo's fp32 default can be checked
on any CPU. Usage: python bench/train_step_cpu.py [--batch 128] [--steps 5] [--rounds 3]
(the four variants alternate within each round; the medians over rounds are printed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from vislang.experiment import build_config
from vislang.losses import clip_loss
from vislang.objectives.towers import build_two_tower


def measure(attn_impl: str, precision: str, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    cfg = build_config({}, [f"model.attn_impl={attn_impl}"]).model
    model = build_two_tower(cfg, vocab_size=512, pad_id=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.randn(batch, 3, cfg.vision.image_size, cfg.vision.image_size)
    tokens = torch.randint(3, 512, (batch, cfg.text.context_length))
    tokens[:, 12:] = 0

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            image, text = model(images, tokens)
            loss = clip_loss(image, text, model.scale())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, batch {args.batch}, {args.rounds} rounds"
    )
    variants = [(precision, attn) for precision in ("fp32", "bf16") for attn in ("math", "sdpa")]
    rates: dict[tuple[str, str], list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for precision, attn in variants:
            steps = args.steps if precision == "fp32" else max(1, args.steps // 5)
            rates[precision, attn].append(measure(attn, precision, args.batch, steps))
    base = statistics.median(rates["fp32", "math"])
    for (precision, attn), values in rates.items():
        rate = statistics.median(values)
        spread = " / ".join(f"{v:.1f}" for v in values)
        print(
            f"  {precision:4s} attention={attn:4s}  {rate:8.1f} samples/s  ({rate / base:.2f}x fp32+math)  [{spread}]"
        )


if __name__ == "__main__":
    main()
