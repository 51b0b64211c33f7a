"""``vislang labo``: LaBo concept bottlenecks (Yang et al. 2023): concepts from a language model,
then an interpretable classifier over an image's similarities to them."""

from __future__ import annotations

import argparse
from pathlib import Path

from vislang.cli.common import positive_int
from vislang.cli.describe import add_backend_options, backend_config

EPILOG = """examples:
  vislang labo concepts world:shape --backend world --out concepts.json
  vislang labo train runs/clip --concepts concepts.json --task world:shape --shots 16 --out labo/

CLASSES is world:shape or world:color (the built-in world's), imagefolder:PATH (its class folders), a file of class names (one a line,
or a .json list) or a shipped class-name set. writes: concepts.json ({class: [concepts]}) and
its .cache.jsonl; DIR/labo.md (accuracy, zero-shot, each class's top concepts) and DIR/labo.json."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "labo",
        help="LaBo: concept bottlenecks from language-model concepts",
        description="LaBo (Yang et al. 2023): a language model lists visual concepts per class; a submodular "
        "selection keeps the discriminative, diverse ones; a linear layer over an image's similarities to them, "
        "initialised from each class to its own concepts, is trained on a few shots.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="labo_command", required=True, metavar="STEP")
    c = sub.add_parser("concepts", help="write concept candidates per class with a language model")
    c.add_argument("classes", metavar="CLASSES", help="world:shape, world:color, a class-names file or shipped set")
    c.add_argument("--out", required=True, help="the concepts JSON to write")
    c.add_argument("--n", type=positive_int, default=3, help="answers asked per question (default 3)")
    add_backend_options(c, 0.7, 256)
    c.set_defaults(func=run_concepts)
    t = sub.add_parser("train", help="select concepts, fit the bottleneck on k shots, score on the test split")
    t.add_argument("model", metavar="MODEL", help="a run directory, checkpoint or export")
    t.add_argument("--concepts", required=True, help="the concepts JSON (vislang labo concepts)")
    t.add_argument(
        "--task",
        default="world:shape",
        help="world:shape, world:color, or imagefolder:PATH (PATH/train/<class>/..., PATH/test/...; default world:shape)",
    )
    t.add_argument("--shots", type=positive_int, default=16, help="training images per class (default 16)")
    t.add_argument("--per-class", type=positive_int, default=5, help="concepts kept per class (default 5)")
    t.add_argument("--steps", type=positive_int, default=300, help="AdamW steps (default 300)")
    t.add_argument("--lr", type=float, default=0.01, help="learning rate (default 0.01)")
    t.add_argument("--l1", type=float, default=0.0, help="L1 penalty on the weights (default 0)")
    t.add_argument("--prior", type=float, default=0.01, help="L2 pull towards the initial association (default 0.01)")
    t.add_argument("--n-train", type=positive_int, default=600, help="train-split images shots come from (default 600)")
    t.add_argument("--n-test", type=positive_int, default=600, help="test-split images scored (default 600)")
    t.add_argument("--seed", type=int, default=0, help="seed of the shot draw (default 0)")
    t.add_argument("--device", default="cpu", help="torch device (default cpu)")
    t.add_argument("--out", required=True, help="the result folder: labo.md and labo.json")
    t.set_defaults(func=run_train)


def run_concepts(args: argparse.Namespace) -> int:
    from vislang.adapt.labo import generate_concepts, read_class_spec
    from vislang.llm import open_backend
    from vislang.llm.cupl import write_json_atomic

    cfg = backend_config(args)
    classnames = read_class_spec(args.classes)
    out = Path(args.out)
    with open_backend(cfg, out.with_suffix(".cache.jsonl")) as backend:
        concepts = generate_concepts(backend, classnames, args.n, cfg.temperature)
    write_json_atomic(concepts, out)
    total = sum(len(v) for v in concepts.values())
    print(f"wrote {total} concepts of {len(concepts)} classes to {out} "
          f"({backend.hits} prompts from the cache {backend.cache.path}, {backend.misses} asked)")  # fmt: skip
    return 0


def run_train(args: argparse.Namespace) -> int:
    from vislang.adapt.labo import (
        LaboOptions,
        Model,
        classes_covered,
        read_text_lists,
        run_labo,
        task_classes,
        write_labo,
    )
    from vislang.errors import ConfigError

    if args.prior < 0 or args.l1 < 0 or not args.lr > 0:
        raise ConfigError("--lr must be > 0 and --l1, --prior >= 0")
    names, _ = task_classes(args.task)
    concepts = read_text_lists(args.concepts, "concepts")
    classes_covered(concepts, names, args.concepts)
    options = LaboOptions(shots=args.shots, per_class=args.per_class, steps=args.steps, lr=args.lr, l1=args.l1,
                          prior=args.prior, n_train=args.n_train, n_test=args.n_test, seed=args.seed)  # fmt: skip
    result = run_labo(Model(args.model, args.device), concepts, args.task, options)
    write_labo(result, options, args.out, str(args.model), args.task)
    print(f"LaBo {args.task} at {args.shots} shots: accuracy {result.accuracy:.4f} (zero-shot {result.zeroshot:.4f}); "
          f"wrote {Path(args.out) / 'labo.md'} and labo.json")  # fmt: skip
    return 0
