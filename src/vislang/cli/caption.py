"""``vislang caption``: captions for image files from a cap, cappa or coca checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vislang.cli.common import non_negative_int, positive_int
from vislang.errors import VislangError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "caption",
        help="write captions for images with a captioner or CoCa checkpoint",
        description="Generate a caption for each image (greedy, beam search or sampling, with a "
        "key-value cache). Prints PATH<TAB>CAPTION lines, or writes them to --out. An image that cannot be "
        "used (corrupt, truncated, more than data.max_image_pixels pixels) is skipped and counted on stderr; "
        "a path that does not exist stops the command before any work.",
    )
    p.add_argument("checkpoint", help="checkpoint file (.pt) or run directory of a cap, cappa or coca run")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--method", choices=["greedy", "beam", "sample"], default="greedy")
    p.add_argument("--beam-size", type=positive_int, default=4, help="beams for --method beam (default 4)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1)")
    p.add_argument(
        "--top-k", type=non_negative_int, default=0, help="sample among the k likeliest tokens (default 0: all)"
    )
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1: off)")
    p.add_argument("--max-length", type=positive_int, help="tokens per caption incl. start/end (default: the context)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per batch (default 64)")
    p.add_argument("--out", help="write the captions to this file instead of printing them")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vislang.api import load_objective, make_preprocess
    from vislang.caption import caption_files, check_images
    from vislang.files import skip_summary
    from vislang.generation import GenerationConfig

    check_images(args.images)
    objective, tokenizer, cfg = load_objective(args.checkpoint)
    if objective.captioner() is None:
        raise VislangError(
            f"{args.checkpoint}: a {cfg.objective.kind!r} model cannot write captions; train cap, cappa or coca"
        )
    try:
        settings = GenerationConfig(
            method=args.method,
            max_length=args.max_length,
            beam_size=args.beam_size,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=args.seed,
        )
    except ValueError as error:
        raise VislangError(str(error)) from None
    captions, skipped = caption_files(objective.model, tokenizer, make_preprocess(cfg), args.images, settings,
                                      args.batch_size, cfg.data.max_image_pixels)  # fmt: skip
    text = "".join(f"{path}\t{caption}\n" for path, caption in captions)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {len(captions)} captions to {args.out}")
    else:
        print(text, end="")
    if skipped:
        print(skip_summary(skipped, len(args.images)), file=sys.stderr)
    return 0
