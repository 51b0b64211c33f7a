"""``vislang eval``: a model's own evaluation tasks, a suite of benchmark tasks, or several suite
results side by side."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vislang.cli.common import add_encoding_options, add_quiet_option, add_set_option

EPILOG = """examples:
  vislang eval runs/demo                               the run config's eval.tasks
  vislang eval runs/demo --suite world --out eval/     the shipped world suite
  vislang eval MODEL --suite my_suite.yaml --out eval/ a suite file (see docs/evaluation.md)
  vislang eval runs/demo --image-size 64               at another resolution (positions interpolated)
  vislang eval --compare eval/a eval/b                 two suite results side by side

MODEL is a run directory, a checkpoint, a vislang export, or an OpenCLIP or Hugging Face folder."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a model (its own tasks, or a suite)",
        description="Evaluate a model: without --suite, the tasks of its run config (eval.tasks); with --suite, "
        "every task of a suite file, writing one JSON per result (CLIP_benchmark's form), summary.md, summary.csv "
        "and plots into --out.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", nargs="?", help="run directory, checkpoint, export, OpenCLIP or HF folder")
    p.add_argument(
        "--suite", help="a suite YAML file, or the name of a shipped suite (world, world_shift, public: a template)"
    )
    p.add_argument("--compare", nargs="+", metavar="DIR", help="suite result folders to put side by side")
    p.add_argument("--out", help="with --suite: the result folder; otherwise a JSON file for the metrics")
    p.add_argument(
        "--image-size",
        type=int,
        metavar="PX",
        help="evaluate at this image size: the model's position embeddings are interpolated to it (docs/resolution.md)",
    )
    add_encoding_options(p, "the suite's, or 0")
    add_quiet_option(p)
    add_set_option(p, "eval.batch_size=256 (with --suite: a suite field, e.g. tasks.0.n=100)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vislang.errors import ConfigError

    if args.compare:
        if args.model or args.suite:
            raise ConfigError("--compare takes suite result folders only (no MODEL, no --suite)")
        return _compare(args)
    if not args.model:
        raise ConfigError("give a MODEL to evaluate (or --compare DIR ...)")
    if args.suite:
        return _suite(args)
    return _own_tasks(args)


def _load(args: argparse.Namespace) -> tuple:
    """(objective, tokenizer, config) of MODEL, at ``--image-size`` when given (one line says so)."""
    from vislang.api import at_image_size, load_objective

    objective, tokenizer, cfg = load_objective(args.model, args.device)
    if args.image_size is not None:
        cfg, lines = at_image_size(objective, cfg, args.image_size)
        for line in lines:
            print(f"{args.model}: {line}", file=sys.stderr)
    return objective, tokenizer, cfg


def _own_tasks(args: argparse.Namespace) -> int:
    from vislang.eval import build_evaluators, evaluate
    from vislang.experiment import eval_context, with_eval_overrides

    objective, tokenizer, cfg = _load(args)
    cfg = with_eval_overrides(cfg, args.set, source=str(args.model))
    if not cfg.eval.tasks:
        print(f"{args.model}: its config lists no eval.tasks; use --suite (e.g. --suite world) or --set eval.tasks=...")
        return 0
    context = eval_context(cfg, tokenizer, args.batch_size, args.workers or 0, not args.quiet, args.precision)
    metrics = evaluate(objective, build_evaluators(cfg.eval.tasks, context))
    for key, value in metrics.items():
        print(f"{key:40s} {value:.4f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(metrics, indent=2) + "\n")
    return 0


def _suite(args: argparse.Namespace) -> int:
    from vislang.eval.suite import read_suite, run_suite
    from vislang.eval.suite_report import datacomp_average, write_results
    from vislang.experiment import eval_context

    suite = read_suite(args.suite, args.set)
    objective, tokenizer, cfg = _load(args)
    workers = suite.workers if args.workers is None else args.workers
    context = eval_context(cfg, tokenizer, args.batch_size or suite.batch_size, workers, not args.quiet, args.precision)
    results = run_suite(objective, suite.tasks, context)
    for result in results:
        key = result.main_metric()
        shown = (
            f"{key} {result.metrics[key]:.4f}" if key else ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
        )
        print(f"{result.name:36s} {shown}")
    average = datacomp_average(results)
    if average is not None:
        print(f"{'average of main metrics':36s} {average:.4f}")
    if args.out:
        write_results(results, Path(args.out), str(args.model), str(args.suite))
        print(f"wrote {Path(args.out) / 'summary.md'} (and one JSON per result, summary.csv, plots)")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from vislang.eval.suite_report import compare_markdown

    table = compare_markdown([Path(d) for d in args.compare])
    print(table, end="")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table)
    return 0
