"""``vislang data world|synth|make-shards|inspect|bench``: look at, write and measure training data."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from vislang.cli.common import non_negative_int, positive_int
from vislang.errors import ConfigError

if TYPE_CHECKING:
    from vislang.config import DataConfig

BENCH_CONTEXT = 77  # tokens per caption of the benchmark's tokenizer (CLIP's context)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="look at training data", description="Inspect data sources.")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    add_world_parser(data_sub)
    add_synth_parser(data_sub)
    add_make_shards_parser(data_sub)
    add_inspect_parser(data_sub)
    add_bench_parser(data_sub)


def add_world_parser(data_sub: argparse._SubParsersAction) -> None:
    w = data_sub.add_parser(
        "world",
        help="render samples of the built-in world to a PNG grid with captions",
        description="Render samples of the built-in world to OUT/grid.png and OUT/captions.txt.",
    )
    w.add_argument("--out", required=True, help="output folder")
    w.add_argument("--n", type=positive_int, default=32, help="number of samples (default 32)")
    w.add_argument("--split", choices=["train", "test"], default="train")
    w.add_argument("--image-size", type=positive_int, default=64)
    w.add_argument(
        "--render-size",
        type=non_negative_int,
        default=0,
        help="draw at this side, then resize (data.world.render_size)",
    )
    w.add_argument("--seed", type=int, default=0)
    w.set_defaults(func=run_world)


def add_synth_parser(data_sub: argparse._SubParsersAction) -> None:
    w = data_sub.add_parser(
        "synth",
        help="write the built-in world as webdataset shards",
        description="Write samples of the built-in world as webdataset shards (KEY.png, KEY.txt, KEY.json) "
        "with sizes.json, so the shard path can be exercised end to end.",
    )
    w.add_argument("--out", required=True, help="output folder (must hold no .tar files)")
    w.add_argument("--n", type=positive_int, default=10000, help="number of samples (default 10000)")
    w.add_argument("--shard-size", type=positive_int, default=5000, help="samples per shard (default 5000)")
    w.add_argument("--split", choices=["train", "test"], default="train")
    w.add_argument("--image-size", type=positive_int, default=48)
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--two-object-prob", type=float, default=0.5)
    w.add_argument("--partial-caption-prob", type=float, default=0.3)
    w.add_argument("--format", choices=["png", "jpg"], default="png")
    w.set_defaults(func=run_synth)


def add_source_arguments(w: argparse.ArgumentParser, kinds: list[str]) -> None:
    w.add_argument("kind", choices=kinds, help="source kind")
    w.add_argument("path", help="table file, image folder, or shard pattern such as 'shards/{00000..00009}.tar'")
    w.add_argument("--image-column", default="image", help="tables: image column (default image)")
    w.add_argument("--caption-columns", default="caption", help="tables: comma-separated caption columns")


def add_make_shards_parser(data_sub: argparse._SubParsersAction) -> None:
    w = data_sub.add_parser(
        "make-shards",
        help="convert a table or folder into webdataset shards",
        description="Copy a table's or folder's images (byte for byte) and captions into webdataset shards "
        "with sizes.json.",
    )
    add_source_arguments(w, ["table", "folder"])
    w.add_argument("--out", required=True, help="output folder (must hold no .tar files)")
    w.add_argument("--shard-size", type=positive_int, default=10000, help="samples per shard (default 10000)")
    w.set_defaults(func=run_make_shards)


def add_inspect_parser(data_sub: argparse._SubParsersAction) -> None:
    w = data_sub.add_parser(
        "inspect",
        help="decode samples of a source and report bad samples, caption lengths and image sizes",
        description="Decode the first N samples of a source as training would; print counts of bad samples "
        "by reason, caption length and image size statistics; with --out also a PNG of the histograms.",
    )
    add_source_arguments(w, ["table", "folder", "shards"])
    w.add_argument("--n", type=positive_int, default=1000, help="samples to decode (default 1000)")
    w.add_argument("--image-size", type=positive_int, default=224)
    w.add_argument("--max-pixels", type=positive_int, help="decompression-bomb limit (default: the config's)")
    w.add_argument("--out", help="folder for inspect.png")
    w.set_defaults(func=run_inspect)


def add_bench_parser(data_sub: argparse._SubParsersAction) -> None:
    w = data_sub.add_parser(
        "bench",
        help="samples/s of the data pipeline for a source",
        description="Measure samples/s of decode + random-resized crop + tokenise + batch in worker processes.",
    )
    add_source_arguments(w, ["table", "folder", "shards"])
    w.add_argument("--workers", type=non_negative_int, default=2)
    w.add_argument("--batch-size", type=positive_int, default=128)
    w.add_argument("--batches", type=positive_int, default=20)
    w.add_argument("--image-size", type=positive_int, default=224)
    w.set_defaults(func=run_bench)


def run_world(args: argparse.Namespace) -> int:
    from PIL import Image

    from vislang.data.world import World
    from vislang.data.world_grid import world_grid

    try:
        world = World(args.image_size, args.seed, render_size=args.render_size)
    except ValueError as error:
        raise ConfigError(f"--image-size / --render-size: {error}") from None
    grid, captions = world_grid(world, args.split, args.n)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(out / "grid.png")
    (out / "captions.txt").write_text("".join(f"{i}\t{caption}\n" for i, caption in enumerate(captions)))
    print(f"wrote {out / 'grid.png'} and {out / 'captions.txt'} ({args.n} samples of the {args.split} split)")
    return 0


def run_synth(args: argparse.Namespace) -> int:
    from vislang.data.make_shards import world_records, write_shards
    from vislang.data.world import World

    try:
        world = World(args.image_size, args.seed, args.two_object_prob, args.partial_caption_prob)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    sizes = write_shards(world_records(world, args.n, args.split, args.format), args.out, args.shard_size)
    print(f"wrote {sum(sizes.values())} samples of the {args.split} split in {len(sizes)} shards to {args.out}")
    # The world's samples are independent draws, so the stored order is already a random one; read
    # in it, a run sees the samples in the on-the-fly world's order.
    shards = f"{args.out}/{{00000..{len(sizes) - 1:05d}}}.tar"
    print(f"train on them with: --set \"data.sources=[{{kind: shards, path: '{shards}', shuffle: false}}]\"")
    return 0


def run_make_shards(args: argparse.Namespace) -> int:
    from vislang.data.make_shards import folder_records, table_records, write_shards

    if args.kind == "table":
        records = table_records(args.path, args.image_column, caption_columns(args.caption_columns))
    else:
        records = folder_records(args.path)
    sizes = write_shards(records, args.out, args.shard_size)
    print(f"wrote {sum(sizes.values())} samples in {len(sizes)} shards to {args.out}")
    return 0


def caption_columns(text: str) -> list[str]:
    """``"caption, alt_text"`` -> ``["caption", "alt_text"]``."""
    return [column.strip() for column in text.split(",") if column.strip()]


def source_data(args: argparse.Namespace, **settings: object) -> DataConfig:
    """The ``data`` section of the one source on the command line (``settings``: other DataConfig fields)."""
    from pydantic import ValidationError

    from vislang.config import DataConfig, SourceConfig

    fields = {"kind": args.kind, "path": args.path}
    if args.kind == "table":
        fields |= {"image_column": args.image_column, "caption_columns": caption_columns(args.caption_columns)}
    try:
        return DataConfig(sources=[SourceConfig(**fields)], **settings)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"data source {args.path}: {key + ': ' if key else ''}{message}") from None


def run_inspect(args: argparse.Namespace) -> int:
    from vislang.data.inspect import inspect_source, summary_lines, write_histograms

    settings = {"max_image_pixels": args.max_pixels} if args.max_pixels else {}
    report = inspect_source(source_data(args, **settings), args.image_size, args.n)
    print("\n".join(summary_lines(report)))
    if args.out:
        write_histograms(report, Path(args.out) / "inspect.png")
        print(f"histograms: {Path(args.out) / 'inspect.png'}")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from vislang.config import TokenizerConfig, TrainConfig
    from vislang.data import build_sources, tokenizer_corpus
    from vislang.data.inspect import pipeline_throughput
    from vislang.tokenizers import BPETokenizer

    data = source_data(args, num_workers=args.workers, random_crop=True)
    defaults = TokenizerConfig()  # the default config's tokenizer, trained on the source's captions
    sources = build_sources(data, args.image_size, TrainConfig().seed)
    corpus = tokenizer_corpus(sources, defaults.train_texts)
    tokenizer = BPETokenizer.train(corpus, defaults.vocab_size, BENCH_CONTEXT)
    rate = pipeline_throughput(data, args.image_size, args.batch_size, args.batches, tokenizer)
    print(f"{rate:.1f} samples/s ({args.workers} workers, batch {args.batch_size}, {args.image_size} px, random crop)")
    return 0
