"""How much of its zero-shot shape accuracy a run trained on the built-in world keeps at other
image sizes after its positions are interpolated, and what the loss comes from: for each size,
the world drawn at that size (what ``vislang eval RUN --image-size N`` measures) beside the
training-size drawings resized to that size (the same pixels, magnified: only the scale in
tokens changes, no detail is added).

    python bench/resolution_transfer.py RUN [--sizes 32 40 48] [--n 500] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np
import torch
from _machine import cpu_line
from PIL import Image


def magnified(images: np.ndarray, side: int) -> np.ndarray:
    """uint8 [N, S, S, 3] images resized to ``side`` with PIL's bicubic filter."""
    return np.stack([np.asarray(Image.fromarray(a).resize((side, side), Image.Resampling.BICUBIC)) for a in images])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run directory or checkpoint trained on the built-in world")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 40, 48])
    parser.add_argument("--n", type=int, default=500, help="test images (one object each)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    from vislang.api import load_objective
    from vislang.data import build_world
    from vislang.data.benchmark.base import ArrayImages
    from vislang.eval import evaluate
    from vislang.eval.zeroshot import ZeroShotEvaluator, ZeroShotTask
    from vislang.experiment import eval_context

    torch.set_num_threads(args.threads)
    trained = load_objective(args.run)[2].model.vision.image_size
    results: dict = {"cpu": cpu_line(), "run": args.run, "trained_at": trained}
    for side in args.sizes:
        objective, tokenizer, cfg = load_objective(args.run, image_size=side)
        context = eval_context(cfg, tokenizer)
        drawn = ZeroShotTask(n=args.n).world_classification(context)["shape"]
        source = build_world(cfg.data.world, trained)
        small = ZeroShotTask(n=args.n).world_classification(replace(context, _world=source))["shape"]
        assert np.array_equal(small.labels, drawn.labels)  # the same scenes at both sizes
        resized = replace(small, images=ArrayImages(magnified(small.images.images, side), f"resized/{side}"))
        metrics = evaluate(
            objective,
            [
                ZeroShotEvaluator("drawn", drawn, context),
                ZeroShotEvaluator(f"resized_from_{trained}", resized, context),
            ],
        )
        results[f"{side}px"] = {k.removesuffix("/top1"): round(v, 4) for k, v in metrics.items() if k.endswith("/top1")}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
