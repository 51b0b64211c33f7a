"""``vislang eval``: the evaluators (zero-shot, retrieval, compositional probes) on a checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vislang.cli.common import add_set_option


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint",
        description="Run the evaluators (zero-shot, retrieval, compositional probes) on a checkpoint "
        "file or a run directory's latest checkpoint.",
    )
    p.add_argument("checkpoint", help="checkpoint file (.pt) or run directory")
    add_set_option(p, "eval.batch_size=256")
    p.add_argument("--out", help="also write the metrics to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vislang.api import load_objective
    from vislang.eval import build_evaluators, evaluate
    from vislang.experiment import eval_context, with_eval_overrides

    objective, tokenizer, cfg = load_objective(args.checkpoint)
    cfg = with_eval_overrides(cfg, args.set, source=str(args.checkpoint))
    metrics = evaluate(objective, build_evaluators(cfg.eval.tasks, eval_context(cfg, tokenizer)))
    for key, value in metrics.items():
        print(f"{key:40s} {value:.4f}")
    if args.out:
        Path(args.out).write_text(json.dumps(metrics, indent=2) + "\n")
    return 0
