"""``vislang train``: train the experiment a YAML config describes."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from vislang.cli.common import add_quiet_option, add_set_option, default_out
from vislang.errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train from a YAML config",
        description="Train the experiment a YAML config describes. Every config field can be "
        "overridden with --set section.key=value (values are read as YAML).",
    )
    p.add_argument("config", help="YAML config file (see configs/)")
    p.add_argument("--out", help="run directory (default: runs/CONFIGNAME-TIMESTAMP)")
    add_set_option(p, "train.lr=1e-3")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    add_quiet_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vislang.experiment import load_config
    from vislang.train.loop import train

    if args.resume and not args.out:
        raise ConfigError("--resume needs --out: the run directory to continue")
    cfg = load_config(args.config, args.set)
    if not args.out and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("under torchrun pass --out, so that every rank uses the same run directory")
    out = Path(args.out) if args.out else default_out(Path(args.config).stem)
    metrics = train(cfg, out, resume=args.resume, quiet=args.quiet)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        print(json.dumps(metrics, indent=2))
        print(f"report: {out / 'report.md'}")
    return 0
