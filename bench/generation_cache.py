"""Caption generation with and without the key-value cache: time per batch and speed-up.

The decoder is the compositional study's captioner (width 96, 2 decoder blocks, patch-8 ViT at
48 px) with random weights; ``min_length`` forces every caption to the full length so both
paths decode the same number of tokens. Also checks that both give identical tokens.
Usage: python bench/generation_cache.py [--batch 32] [--context 20 77] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from vislang.experiment import build_config
from vislang.generation import GenerationConfig, generate
from vislang.objectives.towers import build_captioner


def timed(fn, repeats: int) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    return (time.perf_counter() - start) / repeats, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--context", type=int, nargs="+", default=[20, 77])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    for context in args.context:
        run = build_config({}, ["model.vision.patch_size=8", "objective=cap", f"model.text.context_length={context}"])
        torch.manual_seed(0)
        model = build_captioner(run.model, run.objective.decoder.depth, 512, 0).eval()
        images = torch.randn(args.batch, 3, 48, 48)
        for method in ("greedy", "beam"):
            results = {}
            for cache in (False, True):
                settings = GenerationConfig(method=method, use_cache=cache, min_length=context, beam_size=4)
                results[cache] = timed(lambda m=model, x=images, s=settings: generate(m, x, 1, 2, 0, s), args.repeats)
            same = torch.equal(results[False][1], results[True][1])
            print(
                f"  context {context:3d} {method:6s}  no cache {results[False][0] * 1000:8.1f} ms  "
                f"cache {results[True][0] * 1000:8.1f} ms  speed-up {results[False][0] / results[True][0]:5.2f}x  "
                f"identical tokens: {same}"
            )


if __name__ == "__main__":
    main()
