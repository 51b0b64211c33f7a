"""``vislang gist``: GIST (Lewis et al. 2024): image-specific captions for fine-tuning, made from
labelled images and a language model's fine-grained class descriptions, one stage a command."""

from __future__ import annotations

import argparse
from pathlib import Path

from vislang.cli.common import positive_int
from vislang.cli.describe import add_backend_options, backend_config

EPILOG = """examples:
  vislang gist describe world:shape --backend world --out fine.json
  vislang gist match runs/clip --descriptions fine.json --task world:shape --n-images 600 --top 2 --out matched.parquet
  vislang gist summarize matched.parquet --backend world --out pairs.parquet
  vislang train ft.yaml --out runs/gist     (ft.yaml: docs/language_adaptation.md)

writes: fine.json ({class: [descriptions]}); matched.parquet (image PNG bytes, label, class,
descriptions, scores: each image's best descriptions of its own class); pairs.parquet (image,
caption, label, class), a table source for vislang train (label_column: label with objective flyp). Generations are cached in OUT with .cache.jsonl."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "gist",
        help="GIST: image-specific captions from fine-grained descriptions, for fine-tuning",
        description="GIST (Lewis et al. 2024): describe each class in fine detail with a language model, match "
        "every labelled image to the best descriptions of its own class, and summarise those into one caption "
        "per image: image-text pairs to fine-tune on.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="gist_command", required=True, metavar="STAGE")
    d = sub.add_parser("describe", help="1: fine-grained descriptions per class")
    d.add_argument("classes", metavar="CLASSES", help="world:shape, world:color, a class-names file or shipped set")
    d.add_argument("--out", required=True, help="the descriptions JSON to write")
    d.add_argument("--n", type=positive_int, default=3, help="answers asked per question (default 3)")
    d.add_argument(
        "--variants",
        help="also ask about each class qualified by each of these words (world:color, a file or shipped set): "
        "descriptions of the variations inside a class, so that matching picks image-specific ones",
    )
    add_backend_options(d, 0.7, 100)
    d.set_defaults(func=run_describe)
    m = sub.add_parser("match", help="2: each training image's best descriptions of its own class")
    m.add_argument("model", metavar="MODEL", help="a run directory, checkpoint or export")
    m.add_argument("--descriptions", required=True, help="the JSON of stage 1")
    m.add_argument(
        "--task",
        default="world:shape",
        help="world:shape, world:color, or imagefolder:PATH (PATH/train/<class>/..., PATH/test/...; default world:shape)",
    )
    m.add_argument("--n-images", type=positive_int, default=600, help="training images matched (default 600)")
    m.add_argument("--top", type=positive_int, default=2, help="descriptions kept per image (default 2)")
    m.add_argument("--device", default="cpu", help="torch device (default cpu)")
    m.add_argument("--out", required=True, help="the matched parquet to write")
    m.set_defaults(func=run_match)
    s = sub.add_parser("summarize", help="3: one caption per image from its matched descriptions")
    s.add_argument("matched", metavar="MATCHED", help="the parquet of stage 2")
    s.add_argument("--out", required=True, help="the pairs parquet to write (columns image, caption)")
    add_backend_options(s, 0.0, 60)
    s.set_defaults(func=run_summarize)


def run_describe(args: argparse.Namespace) -> int:
    from vislang.adapt.gist import describe_fine_grained
    from vislang.adapt.labo import read_class_spec
    from vislang.llm import open_backend
    from vislang.llm.cupl import write_json_atomic

    cfg = backend_config(args)
    classnames = read_class_spec(args.classes)
    variants = read_class_spec(args.variants) if args.variants else []
    out = Path(args.out)
    with open_backend(cfg, out.with_suffix(".cache.jsonl")) as backend:
        descriptions = describe_fine_grained(backend, classnames, args.n, cfg.temperature, variants)
    write_json_atomic(descriptions, out)
    total = sum(len(v) for v in descriptions.values())
    print(f"wrote {total} fine-grained descriptions of {len(descriptions)} classes to {out} "
          f"({backend.hits} prompts from the cache, {backend.misses} asked)")  # fmt: skip
    return 0


def run_match(args: argparse.Namespace) -> int:
    from vislang.adapt.gist import match_images, write_matched
    from vislang.adapt.labo import Model, classes_covered, read_text_lists

    descriptions = read_text_lists(args.descriptions, "descriptions")
    model = Model(args.model, args.device)
    data = model.task(args.task, args.n_images, "train")
    classes_covered(descriptions, data.classnames, args.descriptions)
    rows = match_images(model, data, descriptions, args.top)
    write_matched(data.images, rows, args.out)
    print(f"wrote {len(rows)} images with their top {args.top} own-class descriptions to {args.out}")
    return 0


def run_summarize(args: argparse.Namespace) -> int:
    from vislang.adapt.gist import read_matched, summarize_matched, write_pairs
    from vislang.llm import open_backend

    cfg = backend_config(args)
    table = read_matched(args.matched)
    out = Path(args.out)
    with open_backend(cfg, out.with_suffix(".cache.jsonl")) as backend:
        captions = summarize_matched(backend, table.column("class").to_pylist(),
                                     table.column("descriptions").to_pylist(), cfg.temperature)  # fmt: skip
    write_pairs(table, captions, out)
    print(f"wrote {len(captions)} image-caption pairs to {out} "
          f"({backend.hits} prompts from the cache, {backend.misses} asked)")  # fmt: skip
    return 0
