"""``vislang demo``: train and evaluate the tiny demo CLIP on the built-in world."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vislang.cli.common import add_quiet_option, default_out, positive_int
from vislang.errors import ConfigError

DEMO_TARGETS = {"zeroshot/shape/top1": 0.90, "zeroshot/color/top1": 0.95}
REPORTED = (
    "retrieval/text_to_image/R@1",
    "retrieval/image_to_text/R@1",
    "compositional/relation/acc",
    "compositional/attribute/acc",
    "compositional/order/acc",
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="train and evaluate a tiny CLIP on the built-in world (CPU, ~5 min)",
        description="Train a tiny CLIP on the built-in compositional world, evaluate it (zero-shot, "
        "retrieval, compositional probes) and write a run directory with report.md.",
    )
    p.add_argument("--out", help="run directory (default: runs/demo-TIMESTAMP)")
    p.add_argument("--steps", type=positive_int, help="training steps (default: the demo config's)")
    p.add_argument("--seed", type=int, default=0, help="seed for the model and the world (default 0)")
    add_quiet_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vislang.checkpoint import list_checkpoints
    from vislang.experiment import build_config
    from vislang.train.loop import train

    overrides = [f"train.seed={args.seed}", f"data.world.seed={args.seed}"]
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    cfg = build_config({}, overrides, source="demo")
    out = Path(args.out) if args.out else default_out("demo")
    # The loop's own refusal suggests --resume, which demo does not take.
    if list_checkpoints(out / "checkpoints"):
        raise ConfigError(f"{out} already holds a run's checkpoints; choose another --out")
    start = time.perf_counter()
    print(f"vislang demo: training a tiny CLIP on the built-in world; run directory {out}")
    metrics = train(cfg, out, quiet=args.quiet)
    minutes = (time.perf_counter() - start) / 60
    print(f"\nfinished in {minutes:.1f} min")
    for key, target in DEMO_TARGETS.items():
        print(f"  {key:28s} {metrics.get(key, float('nan')):.3f}  (target >= {target})")
    for key in REPORTED:
        print(f"  {key:28s} {metrics.get(key, float('nan')):.3f}")
    print(f"report: {out / 'report.md'}")
    return 0
