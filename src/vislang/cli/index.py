"""``vislang index``: embed images (and their captions) of any source into a searchable index."""

from __future__ import annotations

import argparse
import os
import sys

from vislang.cli.common import add_quiet_option, non_negative_int, positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "index",
        help="embed a folder, table or shards with a model into a searchable index",
        description="Embed every image of the SOURCEs (and their captions, where they have them) with "
        "MODEL and write an index directory: parquet parts of embeddings, keys, captions and thumbnails, "
        "then faiss indexes (exact for small collections, HNSW or IVF-PQ for large ones). A SOURCE is a "
        "folder of images (a NAME.txt beside an image is its caption), a table (.parquet/.csv/.tsv), local "
        "webdataset shards (braces allowed) or streamed shards (URLs, pipe:); several are concatenated. "
        "Parts are written as they finish: the same command continues a killed job. Under torchrun the "
        "ranks split the parts; --engine ray runs them as Ray tasks. Images that cannot be read are "
        "skipped and counted.",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="folder, table, shard pattern or stream URL")
    p.add_argument("--model", required=True, help="anything vislang.load opens (checkpoint, run, export, OpenCLIP/HF)")
    p.add_argument("--out", required=True, help="the index directory")
    p.add_argument("--batch-size", type=positive_int, default=256, help="images per batch (default 256)")
    p.add_argument("--workers", type=non_negative_int, default=min(8, os.cpu_count() or 1),
                   help="image-decoding worker processes (default: CPUs, at most 8)")  # fmt: skip
    p.add_argument("--part-size", type=positive_int, default=4096, help="samples per part file (default 4096)")
    p.add_argument("--no-thumbnails", action="store_true", help="store no thumbnails (search pages show none)")
    p.add_argument("--thumbnail-size", type=positive_int, default=160, help="thumbnail box in pixels (default 160)")
    p.add_argument("--image-column", default="image", help="tables: image paths or bytes (default image)")
    p.add_argument("--caption-column", help="tables: the caption column (default: no captions)")
    p.add_argument("--max-image-pixels", type=positive_int, help="skip larger images (default: training's limit)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast precision")
    p.add_argument("--quantize", choices=["int8"],
                   help="CPU: the towers' linear layers in int8 (dynamic quantization; faster, embeddings "
                   "differ slightly from fp32: docs/search.md)")  # fmt: skip
    p.add_argument("--engine", choices=["local", "ray"], default="local", help="one process (or torchrun) or Ray")
    p.add_argument("--tasks", type=positive_int, default=2, help="--engine ray: tasks, each a share of the parts")
    p.add_argument("--kind", choices=["auto", "flat", "ivfpq", "hnsw"], default="auto", help="faiss index kind")
    p.add_argument("--nlist", type=positive_int, help="IVF-PQ: inverted lists (default about 4 sqrt(N))")
    p.add_argument("--pq-m", type=positive_int, help="IVF-PQ: sub-quantisers (must divide the width)")
    p.add_argument("--hnsw-m", type=positive_int, help="HNSW: neighbours per node (default 32)")
    p.add_argument("--target-recall", type=float, default=0.95, help="tune search for this recall@10 (default 0.95)")
    p.add_argument("--overwrite", action="store_true", help="replace an index of another job in --out")
    add_quiet_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vislang.search.build import DEFAULT_MAX_PIXELS, IndexOptions
    from vislang.search.scale import IndexJob, run_index

    options = IndexOptions(
        part_size=args.part_size,
        batch_size=args.batch_size,
        workers=args.workers,
        thumbnail_size=None if args.no_thumbnails else args.thumbnail_size,
        max_pixels=args.max_image_pixels or DEFAULT_MAX_PIXELS,
        device=args.device,
        precision=args.precision,
        quantize=args.quantize,
        quiet=args.quiet,
    )
    faiss = {"kind": args.kind, "target_recall": args.target_recall, "nlist": args.nlist, "pq_m": args.pq_m,
             "hnsw_m": args.hnsw_m}  # fmt: skip
    job = IndexJob(args.model, list(args.sources), Path(args.out), options, args.image_column,
                   args.caption_column, args.overwrite, faiss)  # fmt: skip
    manifest = run_index(job, args.engine, args.tasks)
    if manifest is not None:  # rank 0 reports
        print(summary_line(manifest, args.out))
        if manifest["skipped"]:
            print(skipped_line(manifest["skipped"], manifest["positions"]), file=sys.stderr)
    return 0


def summary_line(manifest: dict, out: str) -> str:
    """What was indexed, in one line."""
    kinds = ", ".join(f"{name} {info['kind']}" for name, info in manifest["faiss"].items())
    return (
        f"indexed {manifest['count']} images ({manifest['captions']} with captions) in {manifest['parts']} "
        f"part{'' if manifest['parts'] == 1 else 's'} into {out} (faiss: {kinds})"
    )


def skipped_line(skipped: dict[str, int], total: int) -> str:
    from vislang.files import SKIP_REASONS

    count = sum(skipped.values())
    reasons = "; ".join(f"{n} {r} ({SKIP_REASONS.get(r, r)})" for r, n in sorted(skipped.items()))
    return f"skipped {count} of {total} samples: {reasons}"
