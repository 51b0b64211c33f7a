"""The ``vislang`` command: parses arguments, loads the config and calls library functions.

Problems with the user's input (config, paths, checkpoints) end with one line on stderr naming
the problem and exit status 2; nothing here prints a traceback for them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from vislang.errors import ConfigError, VislangError

DEMO_TARGETS = {"zeroshot/shape/top1": 0.90, "zeroshot/color/top1": 0.95}


def _default_out(name: str) -> Path:
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def cmd_demo(args: argparse.Namespace) -> int:
    from vislang.config import build_config
    from vislang.train.loop import train

    overrides = [f"train.seed={args.seed}", f"data.world.seed={args.seed}"]
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    cfg = build_config({}, overrides, source="demo")
    out = Path(args.out) if args.out else _default_out("demo")
    start = time.perf_counter()
    print(f"vislang demo: training a tiny CLIP on the built-in world; run directory {out}")
    metrics = train(cfg, out, quiet=args.quiet)
    minutes = (time.perf_counter() - start) / 60
    print(f"\nfinished in {minutes:.1f} min")
    for key, target in DEMO_TARGETS.items():
        print(f"  {key:28s} {metrics.get(key, float('nan')):.3f}  (target >= {target})")
    for key in (
        "retrieval/text_to_image/R@1",
        "retrieval/image_to_text/R@1",
        "compositional/relation/acc",
        "compositional/attribute/acc",
        "compositional/order/acc",
    ):
        print(f"  {key:28s} {metrics.get(key, float('nan')):.3f}")
    print(f"report: {out / 'report.md'}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from vislang.config import load_config
    from vislang.train.loop import train

    cfg = load_config(args.config, args.set)
    if not args.out and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("under torchrun pass --out, so that every rank uses the same run directory")
    out = Path(args.out) if args.out else _default_out(Path(args.config).stem)
    metrics = train(cfg, out, resume=args.resume, quiet=args.quiet)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        print(json.dumps(metrics, indent=2))
        print(f"report: {out / 'report.md'}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from vislang.api import load_objective
    from vislang.config import build_config
    from vislang.eval import build_evaluators, evaluate

    objective, tokenizer, cfg = load_objective(args.checkpoint)
    cfg = build_config(cfg.model_dump(mode="json"), args.set, source=str(args.checkpoint))
    metrics = evaluate(objective, build_evaluators(cfg, tokenizer))
    for key, value in metrics.items():
        print(f"{key:40s} {value:.4f}")
    if args.out:
        Path(args.out).write_text(json.dumps(metrics, indent=2) + "\n")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from vislang.export import export_model

    out = export_model(args.checkpoint, args.out)
    print(f"exported to {out} (model.safetensors, config.json, tokenizer.json); open with vislang.load('{out}')")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from vislang import convert

    if args.source == "open_clip":
        out = convert.import_open_clip(args.weights, args.out, args.arch, args.arch_config, args.tokenizer)
    elif args.source == "hf":
        out = convert.import_hf(args.weights, args.out, args.tokenizer)
    elif args.to == "open_clip":
        out = convert.export_open_clip(args.weights, args.out)
    else:
        out = convert.export_hf(args.weights, args.out)
    opens = "vislang.load" if args.source else ("open_clip.create_model('local-dir:...')" if args.to == "open_clip"
                                               else "transformers' from_pretrained")  # fmt: skip
    print(f"converted {args.weights} -> {out}; open it with {opens}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from vislang.api import load
    from vislang.export import embed_images, embed_texts, write_embeddings

    model, tokenizer, preprocess = load(args.checkpoint, args.device)
    if args.images:
        ids, embeddings, skipped = embed_images(model, preprocess, args.images, args.batch_size, args.quiet)
    else:
        ids, embeddings, skipped = embed_texts(model, tokenizer, args.texts, args.batch_size, args.quiet)
    files = write_embeddings(ids, embeddings, args.out)
    print(f"{len(ids)} embeddings of dimension {embeddings.shape[1]} -> {', '.join(map(str, files))}")
    if skipped:
        print(f"skipped {len(skipped)} unreadable images, e.g. {skipped[0]}", file=sys.stderr)
    return 0


def cmd_caption(args: argparse.Namespace) -> int:
    from PIL import Image

    from vislang.api import load_objective, make_preprocess
    from vislang.generation import GenerationConfig, generate

    objective, tokenizer, cfg = load_objective(args.checkpoint)
    if not hasattr(objective.model, "image_context"):
        raise VislangError(
            f"{args.checkpoint}: a {cfg.objective!r} model cannot write captions; train cap, cappa or coca"
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
    preprocess, lines = make_preprocess(cfg), []
    for start in range(0, len(args.images), args.batch_size):
        paths = args.images[start : start + args.batch_size]
        images = []
        for path in paths:
            try:
                with Image.open(path) as image:
                    images.append(image.convert("RGB"))
            except FileNotFoundError:
                raise VislangError(f"image not found: {path}") from None
            except OSError as error:
                raise VislangError(f"cannot read image {path}: {error}") from None
        tokens = generate(
            objective.model, preprocess(images), tokenizer.sot_id, tokenizer.eot_id, tokenizer.pad_id, settings
        )
        lines += [f"{path}\t{tokenizer.decode(row.tolist())}" for path, row in zip(paths, tokens)]
    text = "".join(line + "\n" for line in lines)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {len(lines)} captions to {args.out}")
    else:
        print(text, end="")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from vislang.config import load_config, to_yaml

    print(to_yaml(load_config(args.config, args.set)), end="")
    return 0


def cmd_data_world(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from vislang.data.world import World

    world = World(args.image_size, args.seed)
    samples = [world.sample(args.split, i) for i in range(args.n)]
    cols = min(8, args.n)
    rows = -(-args.n // cols)
    grid = np.zeros((rows * args.image_size, cols * args.image_size, 3), dtype=np.uint8)
    for i, (image, _, _) in enumerate(samples):
        r, c = divmod(i, cols)
        grid[r * args.image_size : (r + 1) * args.image_size, c * args.image_size : (c + 1) * args.image_size] = image
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(out / "grid.png")
    (out / "captions.txt").write_text("".join(f"{i}\t{caption}\n" for i, (_, caption, _) in enumerate(samples)))
    print(f"wrote {out / 'grid.png'} and {out / 'captions.txt'} ({args.n} samples of the {args.split} split)")
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from vislang.data.make_shards import world_records, write_shards
    from vislang.data.world import World

    world = World(args.image_size, args.seed, args.two_object_prob, args.partial_caption_prob)
    sizes = write_shards(world_records(world, args.n, args.split, args.format), args.out, args.shard_size)
    print(f"wrote {sum(sizes.values())} samples of the {args.split} split in {len(sizes)} shards to {args.out}")
    # The world's samples are independent draws, so the stored order is already a random one; read
    # in it, a run sees the samples in the on-the-fly world's order.
    shards = f"{args.out}/{{00000..{len(sizes) - 1:05d}}}.tar"
    print(f"train on them with: --set \"data.sources=[{{kind: shards, path: '{shards}', shuffle: false}}]\"")
    return 0


def cmd_data_make_shards(args: argparse.Namespace) -> int:
    from vislang.data.make_shards import folder_records, table_records, write_shards

    if args.kind == "table":
        records = table_records(args.path, args.image_column, args.caption_columns.split(","))
    else:
        records = folder_records(args.path)
    sizes = write_shards(records, args.out, args.shard_size)
    print(f"wrote {sum(sizes.values())} samples in {len(sizes)} shards to {args.out}")
    return 0


def _inspected_config(args: argparse.Namespace):
    from vislang.data.inspect import source_config

    extra = [f"data.max_image_pixels={args.max_pixels}"] if getattr(args, "max_pixels", None) else []
    if args.kind == "table":
        extra.append(
            f"data.sources=[{{kind: table, path: '{args.path}', image_column: {args.image_column}, "
            f"caption_columns: [{args.caption_columns}]}}]"
        )
    return source_config(args.kind, args.path, extra, args.image_size)


def cmd_data_inspect(args: argparse.Namespace) -> int:
    from vislang.data.inspect import inspect_source, summary_lines, write_histograms

    report = inspect_source(_inspected_config(args), args.n)
    print("\n".join(summary_lines(report)))
    if args.out:
        write_histograms(report, Path(args.out) / "inspect.png")
        print(f"histograms: {Path(args.out) / 'inspect.png'}")
    return 0


def cmd_data_bench(args: argparse.Namespace) -> int:
    from vislang.data import tokenizer_corpus
    from vislang.data.inspect import pipeline_throughput
    from vislang.tokenizers import BPETokenizer

    cfg = _inspected_config(args)
    cfg = cfg.model_copy(
        update={
            "data": cfg.data.model_copy(update={"num_workers": args.workers, "random_crop": True}),
            "train": cfg.train.model_copy(update={"batch_size": args.batch_size}),
        }
    )
    tokenizer = BPETokenizer.train(tokenizer_corpus(cfg), 512, 77)
    rate = pipeline_throughput(cfg, args.batches, tokenizer)
    print(f"{rate:.1f} samples/s ({args.workers} workers, batch {args.batch_size}, {args.image_size} px, random crop)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vislang",
        description="Learn vision models from language supervision: train, evaluate and use CLIP-style models.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "demo",
        help="train and evaluate a tiny CLIP on the built-in world (CPU, ~5 min)",
        description="Train a tiny CLIP on the built-in compositional world, evaluate it (zero-shot, "
        "retrieval, compositional probes) and write a run directory with report.md.",
    )
    p.add_argument("--out", help="run directory (default: runs/demo-TIMESTAMP)")
    p.add_argument("--steps", type=int, help="training steps (default: the demo config's)")
    p.add_argument("--seed", type=int, default=0, help="seed for the model and the world (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "train",
        help="train from a YAML config",
        description="Train the experiment a YAML config describes. Every config field can be "
        "overridden with --set section.key=value (values are read as YAML).",
    )
    p.add_argument("config", help="YAML config file (see configs/)")
    p.add_argument("--out", help="run directory (default: runs/CONFIGNAME-TIMESTAMP)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field, e.g. train.lr=1e-3"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint",
        description="Run the evaluators (zero-shot, retrieval, compositional probes) on a checkpoint "
        "file or a run directory's latest checkpoint.",
    )
    p.add_argument("checkpoint", help="checkpoint file (.pt) or run directory")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. eval.n_probe=1000",
    )
    p.add_argument("--out", help="also write the metrics to this JSON file")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "caption",
        help="write captions for images with a captioner or CoCa checkpoint",
        description="Generate a caption for each image (greedy, beam search or sampling, with a "
        "key-value cache). Prints PATH<TAB>CAPTION lines, or writes them to --out.",
    )
    p.add_argument("checkpoint", help="checkpoint file (.pt) or run directory of a cap, cappa or coca run")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--method", choices=["greedy", "beam", "sample"], default="greedy")
    p.add_argument("--beam-size", type=int, default=4, help="beams for --method beam (default 4)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest tokens (default 0: all)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1: off)")
    p.add_argument("--max-length", type=int, help="tokens per caption incl. start/end (default: the context)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    p.add_argument("--out", help="write the captions to this file instead of printing them")
    p.set_defaults(func=cmd_caption)

    p = sub.add_parser(
        "export",
        help="export a checkpoint as safetensors + config + tokenizer",
        description="Write a checkpoint (or a run directory's latest) as a directory of plain files: "
        "model.safetensors, config.json, tokenizer.json. vislang.load and every command that takes a "
        "checkpoint open it; loading it never unpickles anything.",
    )
    p.add_argument("checkpoint", help="checkpoint file (.pt) or run directory")
    p.add_argument("--out", required=True, help="directory to write")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "convert",
        help="convert OpenCLIP and Hugging Face CLIP/SigLIP checkpoints to and from vislang",
        description="--from open_clip|hf: a peer checkpoint -> a vislang export directory (weights, config with "
        "the model's preprocessing, tokenizer) that vislang.load, eval and embed open. --to open_clip|hf: a "
        "vislang checkpoint, run directory or export -> open_clip_config.json + open_clip_model.safetensors "
        "(OpenCLIP's local-dir: layout) or a Hugging Face CLIPModel/SiglipModel directory. OpenCLIP's ViT "
        "CLIPs (incl. -quickgelu) and Hugging Face CLIPModel and SiglipModel are supported; nothing is "
        "downloaded and no pickled code is run.",
    )
    direction = p.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from", dest="source", choices=["open_clip", "hf"], help="import from this format")
    direction.add_argument("--to", choices=["open_clip", "hf"], help="export to this format")
    p.add_argument(
        "--weights",
        required=True,
        help="--from open_clip: weights file (.safetensors/.bin/.pt) or a folder with open_clip_config.json; "
        "--from hf: the model directory; --to: vislang checkpoint, run directory or export",
    )
    p.add_argument("--out", required=True, help="directory to write")
    p.add_argument("--arch", help="--from open_clip: architecture name (ViT-B-32, ViT-B-16-quickgelu, ...)")
    p.add_argument("--arch-config", help="--from open_clip: an OpenCLIP model-config JSON instead of --arch")
    p.add_argument(
        "--tokenizer",
        help="OpenAI's BPE merges file for CLIP models (default: the one of an installed open_clip, or the HF "
        "directory's merges.txt); for SigLIP a directory with tokenizer.json",
    )
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "embed",
        help="embed a folder of images or a file of texts",
        description="Compute L2-normalised embeddings in batches and write them to a .npy file (ids in "
        "NAME.ids.txt beside it: image paths relative to the folder, or line numbers) or a .parquet "
        "file (columns id, embedding).",
    )
    p.add_argument("checkpoint", help="checkpoint file, run directory or exported directory")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--images", help="folder of images (searched recursively)")
    what.add_argument("--texts", help="UTF-8 text file, one text per line")
    p.add_argument("--out", required=True, help="output file: .npy or .parquet")
    p.add_argument("--batch-size", type=int, default=256, help="items per batch (default 256)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser(
        "config",
        help="print a resolved config",
        description="Print the resolved config (defaults, file, presets and --set overrides) as YAML.",
    )
    p.add_argument("config", nargs="?", help="YAML config file (default: the built-in defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("data", help="look at training data", description="Inspect data sources.")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    w = data_sub.add_parser(
        "world",
        help="render samples of the built-in world to a PNG grid with captions",
        description="Render samples of the built-in world to OUT/grid.png and OUT/captions.txt.",
    )
    w.add_argument("--out", required=True, help="output folder")
    w.add_argument("--n", type=int, default=32, help="number of samples (default 32)")
    w.add_argument("--split", choices=["train", "test"], default="train")
    w.add_argument("--image-size", type=int, default=64)
    w.add_argument("--seed", type=int, default=0)
    w.set_defaults(func=cmd_data_world)

    w = data_sub.add_parser(
        "synth",
        help="write the built-in world as webdataset shards",
        description="Write samples of the built-in world as webdataset shards (KEY.png, KEY.txt, KEY.json) "
        "with sizes.json, so the shard path can be exercised end to end.",
    )
    w.add_argument("--out", required=True, help="output folder (must hold no .tar files)")
    w.add_argument("--n", type=int, default=10000, help="number of samples (default 10000)")
    w.add_argument("--shard-size", type=int, default=5000, help="samples per shard (default 5000)")
    w.add_argument("--split", choices=["train", "test"], default="train")
    w.add_argument("--image-size", type=int, default=48)
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--two-object-prob", type=float, default=0.5)
    w.add_argument("--partial-caption-prob", type=float, default=0.3)
    w.add_argument("--format", choices=["png", "jpg"], default="png")
    w.set_defaults(func=cmd_data_synth)

    def source_arguments(w: argparse.ArgumentParser, kinds: list[str]) -> None:
        w.add_argument("kind", choices=kinds, help="source kind")
        w.add_argument("path", help="table file, image folder, or shard pattern such as 'shards/{00000..00009}.tar'")
        w.add_argument("--image-column", default="image", help="tables: image column (default image)")
        w.add_argument("--caption-columns", default="caption", help="tables: comma-separated caption columns")

    w = data_sub.add_parser(
        "make-shards",
        help="convert a table or folder into webdataset shards",
        description="Copy a table's or folder's images (byte for byte) and captions into webdataset shards "
        "with sizes.json.",
    )
    source_arguments(w, ["table", "folder"])
    w.add_argument("--out", required=True, help="output folder (must hold no .tar files)")
    w.add_argument("--shard-size", type=int, default=10000, help="samples per shard (default 10000)")
    w.set_defaults(func=cmd_data_make_shards)

    w = data_sub.add_parser(
        "inspect",
        help="decode samples of a source and report bad samples, caption lengths and image sizes",
        description="Decode the first N samples of a source as training would; print counts of bad samples "
        "by reason, caption length and image size statistics; with --out also a PNG of the histograms.",
    )
    source_arguments(w, ["table", "folder", "shards"])
    w.add_argument("--n", type=int, default=1000, help="samples to decode (default 1000)")
    w.add_argument("--image-size", type=int, default=224)
    w.add_argument("--max-pixels", type=int, help="decompression-bomb limit (default: the config's)")
    w.add_argument("--out", help="folder for inspect.png")
    w.set_defaults(func=cmd_data_inspect)

    w = data_sub.add_parser(
        "bench",
        help="samples/s of the data pipeline for a source",
        description="Measure samples/s of decode + random-resized crop + tokenise + batch in worker processes.",
    )
    source_arguments(w, ["table", "folder", "shards"])
    w.add_argument("--workers", type=int, default=2)
    w.add_argument("--batch-size", type=int, default=128)
    w.add_argument("--batches", type=int, default=20)
    w.add_argument("--image-size", type=int, default=224)
    w.set_defaults(func=cmd_data_bench)
    from vislang.curate.cli import add_parsers as add_curate_parsers

    add_curate_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except VislangError as error:
        print(f"vislang: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vislang: interrupted (a run continues from its last checkpoint with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
