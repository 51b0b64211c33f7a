"""How much ``vislang index --quantize int8`` changes a trained model's results: the run's own
evaluation tasks (``eval.tasks`` of its config) on the fp32 model and on its int8 copy
(:func:`vislang.search.quantize.quantize_int8`), side by side, with the time each took.

    python bench/int8_quality.py RUN [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from _machine import cpu_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run directory or checkpoint whose config lists eval.tasks")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    from vislang.api import load_objective
    from vislang.eval import build_evaluators, evaluate
    from vislang.experiment import eval_context
    from vislang.search.quantize import quantize_int8

    torch.set_num_threads(args.threads)
    objective, tokenizer, cfg = load_objective(args.run)
    results = {"cpu": cpu_line(), "run": args.run}
    for name, model in (("fp32", objective), ("int8", quantize_int8(objective))):
        evaluators = build_evaluators(cfg.eval.tasks, eval_context(cfg, tokenizer))
        start = time.perf_counter()
        metrics = evaluate(model, evaluators)
        results[name] = {"seconds": round(time.perf_counter() - start, 2)} | {
            k: round(v, 4) for k, v in metrics.items()
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
