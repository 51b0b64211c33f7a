"""Reading and writing models: ``vislang export`` (a checkpoint as plain files), ``vislang convert``
(OpenCLIP / Hugging Face checkpoints to and from vislang) and ``vislang embed`` (embeddings to files)."""

from __future__ import annotations

import argparse
import sys

from vislang.cli.common import add_quiet_option, positive_int
from vislang.errors import VislangError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    add_export_parser(subparsers)
    add_convert_parser(subparsers)
    add_embed_parser(subparsers)


def add_export_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint as safetensors + config + tokenizer, or its two towers as ONNX",
        description="--format safetensors (the default): write a checkpoint (or a run directory's latest) as a "
        "directory of plain files: model.safetensors, config.json, tokenizer.json. vislang.load and every command "
        "that takes a checkpoint open it. Loading reads those three files and unpickles none of them. The export is "
        "self-contained except where its config names local files outside it: model.text.pretrained (a "
        "Hugging Face model directory, read by transformers) and model.vision.timm_pretrained (a weights "
        "file, read by timm); those are read when the export is loaded (torch files among them with "
        "weights_only), so they must still be there and be the same files. --format onnx: write the image and "
        "text towers as image_encoder.onnx and text_encoder.onnx (dynamic batch axis, normalised embeddings), "
        "with tokenizer.json, config.json and onnx_config.json (preprocessing, logit scale, tensor names); the "
        "graphs are checked against PyTorch with onnxruntime before the manifest is written. vislang.load, "
        "vislang embed and vislang eval open that directory through onnxruntime (pip install 'vislang[onnx]'). "
        "See docs/onnx.md.",
    )
    p.add_argument("checkpoint", help="checkpoint file (.pt), run directory, export, OpenCLIP or HF folder")
    p.add_argument("--out", required=True, help="directory to write")
    p.add_argument(
        "--format", choices=["safetensors", "onnx"], default="safetensors", help="what to write (default safetensors)"
    )
    p.set_defaults(func=run_export)


def add_convert_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
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
    p.set_defaults(func=run_convert)


def add_embed_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "embed",
        help="embed a folder of images or a file of texts",
        description="Compute L2-normalised embeddings in batches and write them to a .npy file (ids in "
        "NAME.ids.txt beside it: image paths relative to the folder, or line numbers from 0) or a .parquet "
        "file (columns id, embedding). Images that cannot be used (corrupt, truncated, more than "
        "data.max_image_pixels pixels) and blank lines are skipped and counted on stderr.",
    )
    p.add_argument("checkpoint", help="checkpoint file, run directory or exported directory")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--images", help="folder of images (searched recursively)")
    what.add_argument("--texts", help="UTF-8 text file, one text per line")
    p.add_argument("--out", required=True, help="output file: .npy or .parquet")
    p.add_argument("--batch-size", type=positive_int, default=256, help="items per batch (default 256)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    add_quiet_option(p)
    p.set_defaults(func=run_embed)


def run_export(args: argparse.Namespace) -> int:
    from vislang.export import export_model

    out = export_model(args.checkpoint, args.out, args.format)
    if args.format == "onnx":
        from vislang.onnx.manifest import read_manifest

        worst = read_manifest(out).checked["max_abs_difference"]
        print(
            f"exported to {out} (image_encoder.onnx, text_encoder.onnx, onnx_config.json, tokenizer.json, "
            f"config.json); onnxruntime against PyTorch: max |difference| image {worst['image']:.1e}, text "
            f"{worst['text']:.1e}; open with vislang.load('{out}')"
        )
        return 0
    print(f"exported to {out} (model.safetensors, config.json, tokenizer.json); open with vislang.load('{out}')")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from vislang import convert

    if args.source == "open_clip":
        out = convert.import_open_clip(args.weights, args.out, args.arch, args.arch_config, args.tokenizer)
        opens = "vislang.load"
    elif args.source == "hf":
        out = convert.import_hf(args.weights, args.out, args.tokenizer)
        opens = "vislang.load"
    elif args.to == "open_clip":
        out = convert.export_open_clip(args.weights, args.out)
        opens = "open_clip.create_model('local-dir:...')"
    else:
        out = convert.export_hf(args.weights, args.out)
        opens = "transformers' from_pretrained"
    print(f"converted {args.weights} -> {out}; open it with {opens}")
    return 0


def run_embed(args: argparse.Namespace) -> int:
    from vislang.api import load_objective, make_preprocess
    from vislang.embed import embed_images, embed_texts, write_embeddings
    from vislang.files import skip_summary

    objective, tokenizer, cfg = load_objective(args.checkpoint, args.device)
    model = objective.model
    needed = "encode_image" if args.images else "encode_text"
    if not hasattr(model, needed):
        raise VislangError(
            f"{args.checkpoint}: a {cfg.objective.kind} model has no {needed}: embed with a clip, siglip or coca model"
        )
    if args.images:
        ids, embeddings, skipped = embed_images(model, make_preprocess(cfg), args.images, args.batch_size,
                                                args.quiet, cfg.data.max_image_pixels)  # fmt: skip
    else:
        ids, embeddings, blank = embed_texts(model, tokenizer, args.texts, args.batch_size, args.quiet)
    files = write_embeddings(ids, embeddings, args.out)
    print(f"{len(ids)} embeddings of dimension {embeddings.shape[1]} -> {', '.join(map(str, files))}")
    if args.images and skipped:
        print(skip_summary(skipped, len(ids) + sum(map(len, skipped.values()))), file=sys.stderr)
    elif not args.images and blank:
        print(f"skipped {blank} blank line{'' if blank == 1 else 's'} of {args.texts}", file=sys.stderr)
    return 0
