"""``vislang config``: print the resolved config, or describe its fields (``--explain``)."""

from __future__ import annotations

import argparse

from vislang.cli.common import add_set_option
from vislang.errors import ConfigError

EVERY_FIELD = ""  # the value of a bare --explain


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "config",
        help="print a resolved config",
        description="Print the resolved config (defaults, file, presets and --set overrides) as YAML.",
    )
    p.add_argument("config", nargs="?", help="YAML config file (default: the built-in defaults)")
    add_set_option(p)
    p.add_argument(
        "--explain",
        nargs="?",
        const=EVERY_FIELD,
        metavar="KEY",
        help="instead, describe the field KEY (dotted, e.g. model.vision.mask_ratio), or every field without "
        "KEY: name, type, default and description",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vislang.experiment import explain, load_config, to_yaml

    if args.explain is None:
        print(to_yaml(load_config(args.config, args.set)), end="")
        return 0
    if args.config or args.set:
        raise ConfigError("config --explain describes the fields; it takes no CONFIG or --set")
    text = explain(args.explain or None)
    print(text, end="" if text.endswith("\n") else "\n")
    return 0
