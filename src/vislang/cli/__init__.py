"""The ``vislang`` command: parses arguments and calls library functions.

Each command group lives in its own module with ``add_parser(subparsers)``; its subcommands
register their run function with ``set_defaults(func=...)``. Problems with the user's input
(config, paths, checkpoints) end with one line on stderr naming the problem and exit status 2;
nothing here prints a traceback for them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from vislang.cli import (
    caption,
    config,
    curate,
    data,
    demo,
    describe,
    fewshot,
    gist,
    index,
    labo,
    model_io,
    search,
    serve,
    tokenizer,
    train,
    wise,
)
from vislang.cli import eval as eval_command
from vislang.errors import VislangError

# In the order of ``vislang --help``.
COMMAND_GROUPS = (
    demo,
    train,
    eval_command,
    wise,
    fewshot,
    labo,
    gist,
    index,
    search,
    serve,
    caption,
    describe,
    model_io,
    config,
    data,
    tokenizer,
    curate,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vislang",
        description="Learn vision models from language supervision: train, evaluate and use CLIP-style models.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except VislangError as error:
        print(f"vislang: error: {error}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("vislang: interrupted (a run continues from its last checkpoint with --resume)", file=sys.stderr)
        code = 130
    world = os.environ.get("WORLD_SIZE", "1")
    if argv is None and world.isdigit() and int(world) > 1:  # a torchrun rank
        leave_rank(code)
    return code


def leave_rank(code: int) -> None:
    """End a torchrun rank whose command has finished, without interpreter finalisation.

    Its work is on disk by now (checkpoints and indexes are written atomically, the logs closed,
    the process group destroyed), but the collective library's C++ threads and the tensors they
    hold can still be torn down during finalisation, and that can abort the process ("terminate
    called without an active exception", seen in CI once in a while on a finished two-rank run),
    which makes torchrun report a job that succeeded as failed. Flushing and leaving at once
    keeps the exit status the command's."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
