"""``vislang fewshot``: training-free and few-shot classifiers (zero-shot, linear probe,
Tip-Adapter, Tip-Adapter-F, the cross-modal probe, SuS-X) on a suite's classification tasks,
over seeded, repeated k-shot draws, with the table and one figure per test set."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vislang.cli.common import add_encoding_options, add_quiet_option, add_set_option, positive_int

METHOD_NAMES = ("zeroshot", "linear_probe", "tip_adapter", "tip_adapter_f", "cross_modal", "sus_x", "sus_x_support")
RENDERINGS = ("filled", "sketch", "textured", "palette")

EPILOG = """examples:
  vislang fewshot world_shift runs/demo --out fewshot/
  vislang fewshot world_shape_shift runs/demo --shots 1 4 16 --methods zeroshot tip_adapter --seeds 5 --out fs/
  vislang fewshot my_suite.yaml export/ --device cuda --out fs/
  vislang fewshot world_shift runs/demo --support generated/ --out fs/

Every zero-shot task of SUITE (a file, or a shipped suite's name) gives test sets; the shots come
from the same data's train split (the world: its train split in its own rendering, so a shift
task is fitted in distribution and tested under shift; a dataset: its `train` split; a task
without one is skipped with a note). That split is carved once into shot candidates, a labelled
validation split (--n-val) on which every hyperparameter is chosen, and an unlabelled pool
(--n-pool) from which SuS-X retrieves --support-per-class images per class by text similarity.
--support DIR adds the row sus_x_support: SuS-X on the images under DIR (one subfolder per class,
e.g. generated from "a photo of a {class}"), labelled by their folder, at most --support-per-class
a class (seeded), no retrieval.
Shots are drawn with seeds 0..SEEDS-1 (big_vision's draw).

writes: DIR/fewshot.csv, fewshot.json (every seed, chosen hyperparameters), fewshot.md and
DIR/<test set>.png (accuracy against shots, zero-shot and SuS-X as horizontal lines)."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``vislang fewshot``."""
    p = subparsers.add_parser(
        "fewshot",
        help="few-shot and training-free classifiers on cached features (Tip-Adapter, SuS-X, probes)",
        description="Fit training-free and few-shot classifiers on a model's cached features for every "
        "classification task of a suite, at several shot counts over seeded draws, and write the table and "
        "accuracy-against-shots figures.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("suite", metavar="SUITE", help="a suite YAML file, or the name of a shipped suite")
    p.add_argument("model", metavar="MODEL", help="a run directory, checkpoint, export, OpenCLIP or HF folder")
    p.add_argument("--out", required=True, help="the result folder")
    p.add_argument("--shots", nargs="+", type=positive_int, default=[1, 2, 4, 8, 16], help="shots per class")
    p.add_argument("--methods", nargs="+", choices=METHOD_NAMES, metavar="METHOD",
                   help=f"of {', '.join(METHOD_NAMES)} (default all; sus_x_support with --support)")  # fmt: skip
    p.add_argument("--seeds", type=positive_int, default=3, help="seeded shot draws per shot count (default 3)")
    p.add_argument("--n-train", type=positive_int, default=1000, help="the world: shot candidates rendered")
    p.add_argument("--n-val", type=positive_int, default=500, help="validation images carved from the train split")
    p.add_argument("--n-pool", type=positive_int, default=2000, help="SuS-X's unlabelled pool from the train split")
    p.add_argument("--support-per-class", type=positive_int, default=16,
                   help="SuS-X: images retrieved per class (--support: at most this many a class)")  # fmt: skip
    p.add_argument(
        "--pool",
        metavar="DIR",
        help="SuS-X: retrieve the support from the images under DIR (any collection, e.g. generated images; "
        "labels and folder names unused) instead of a slice of the train split",
    )
    p.add_argument(
        "--support",
        metavar="DIR",
        help="SuS-X with a given support set (SuS-SD): the images under DIR, one subfolder per class named "
        "as the class (or lower-cased with _ for spaces), labelled by their folder; adds the row sus_x_support",
    )
    p.add_argument("--pool-rendering", choices=RENDERINGS, help="the world: draw the pool in this rendering")
    p.add_argument("--epochs", type=positive_int, default=20, help="Tip-Adapter-F training epochs (default 20)")
    p.add_argument("--probe-max-iter", type=positive_int, default=1000,
                   help="L-BFGS iterations per probe fit (default 1000, CLIP's)")  # fmt: skip
    add_encoding_options(p, "the suite's")
    add_quiet_option(p)
    add_set_option(p, "tasks.0.n=100 (a field of the suite file)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the suite and the model, run every method, write the outputs, print the largest shot count."""
    from vislang.adapt.fewshot import FewshotOptions, run_fewshot
    from vislang.adapt.fewshot_report import write_outputs
    from vislang.api import load_objective
    from vislang.eval.suite import read_suite
    from vislang.experiment import eval_context

    methods = list(args.methods or [m for m in METHOD_NAMES if m != "sus_x_support"])
    if args.support and "sus_x_support" not in methods:
        methods.append("sus_x_support")  # --support asks for its row
    options = FewshotOptions(
        shots=tuple(sorted(set(args.shots))),
        methods=tuple(dict.fromkeys(methods)),
        seeds=args.seeds,
        n_train=args.n_train,
        n_val=args.n_val,
        n_pool=args.n_pool,
        support_per_class=args.support_per_class,
        pool_rendering=args.pool_rendering,
        pool_dir=args.pool,
        support_dir=args.support,
        epochs=args.epochs,
        probe_max_iter=args.probe_max_iter,
    )
    options.check()
    suite = read_suite(args.suite, args.set)
    objective, tokenizer, cfg = load_objective(args.model, args.device)
    objective.eval()
    workers = suite.workers if args.workers is None else args.workers
    batch = args.batch_size or suite.batch_size
    context = eval_context(cfg, tokenizer, batch, workers, not args.quiet, args.precision)
    result = run_fewshot(objective, suite.tasks, context, options)
    for note in result.notes:
        print(f"vislang: note: {note}", file=sys.stderr)
    for warning in result.warnings:
        print(f"vislang: warning: {warning}", file=sys.stderr)
    out = Path(args.out)
    write_outputs(result, out, str(args.model), str(args.suite))
    for row in result.rows:
        if row.method in ("zeroshot", "sus_x", "sus_x_support") or row.shots == max(options.shots):
            print(f"{row.task:32s} {row.method:14s} {row.shots:3d} shots  {row.mean:.4f} ± {row.std:.4f}")
    print(f"wrote {out / 'fewshot.md'}, fewshot.csv, fewshot.json and one PNG per test set")
    return 0
