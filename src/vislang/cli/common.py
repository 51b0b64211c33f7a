"""What several command modules share: the one ``--set`` option, ``--quiet``, count types, run directories."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_set_option(parser: argparse.ArgumentParser, example: str | None = None) -> None:
    """``--set KEY=VALUE`` (repeatable): override a config field; ``example`` goes into the help."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config field, e.g. {example}" if example else "override a config field",
    )


def add_encoding_options(parser: argparse.ArgumentParser, workers_default: str) -> None:
    """How a command that evaluates encodes: batch size, decoding workers, device, precision."""
    parser.add_argument("--batch-size", type=positive_int, help="images or texts encoded at a time")
    parser.add_argument("--workers", type=non_negative_int, help=f"image-decoding workers (default: {workers_default})")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda or cuda:1 (default cpu)")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast precision")


def add_quiet_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def positive_int(text: str) -> int:
    """argparse type for counts that must be at least 1 (steps, samples, batch sizes, sizes)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type for counts where 0 means none or off (worker processes, top-k, clusters)."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def default_out(name: str) -> Path:
    """``runs/NAME-TIMESTAMP``: the run directory when ``--out`` is not given."""
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
