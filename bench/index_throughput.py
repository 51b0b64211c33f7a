"""Images/s of ``vislang index`` against the plain OpenCLIP loop on the same model and images
(and clip-retrieval's ``clip inference``, where a separate virtual environment holds it).

The model is a randomly initialised OpenCLIP model (default ViT-B-32), saved as an OpenCLIP
folder: vislang opens that folder (converted on load), OpenCLIP loads the same weights file. The
images are synthetic JPEGs (smooth noise, no downloads) in one folder, without captions.

The OpenCLIP loop is what an embedding script does by hand (and what clip-retrieval's inference
does inside): ``create_model_and_transforms``, a Dataset over the sorted files, a DataLoader
with the same workers and batch size, ``encode_image`` under ``no_grad``, L2 normalisation, one
``.npy`` at the end. Each side runs in its own fresh process with the same intra-op threads; the
timed span starts before the model is loaded and ends when the embeddings are on disk (imports
excluded). vislang's span includes writing parquet parts and the exact faiss index; it is
measured with thumbnails (the default) and without. clip-retrieval runs as a whole process
(``--clip_model open_clip:ARCH/<weights path>`` loads the same local weights offline); its own
stats give its loop time after loading and warm-up. Its virtual environment is separate (its pins
conflict with vislang's: numpy<2, pyarrow<16, webdataset<0.3, open_clip<3); give it this torch.

    python bench/index_throughput.py [--images 2000] [--size 256] [--workers 2] [--batch-size 64]
        [--repeats 1] [--clip-retrieval-venv /tmp/crvenv] [--int8] [--bf16]

``--int8`` adds ``vislang index --quantize int8`` as a side, ``--bf16`` adds ``vislang index
--precision bf16``; each reports how close its embeddings are to the fp32 loop's (mean and
minimum cosine, nearest neighbour unchanged).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import cpu_line


def write_images(folder: Path, n: int, size: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        small = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.BICUBIC).save(folder / f"{i:06d}.jpg", quality=90)


def write_model(folder: Path, arch: str) -> None:
    """A random OpenCLIP model as an OpenCLIP folder (config + safetensors weights)."""
    import open_clip
    import safetensors.torch
    import torch

    torch.manual_seed(0)
    model = open_clip.create_model(arch, pretrained=None).eval()
    folder.mkdir()
    config = {"model_cfg": open_clip.get_model_config(arch), "preprocess_cfg": {}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(state, str(folder / "open_clip_model.safetensors"))


# -- the two sides, each run in a fresh process ---------------------------------------------------


def side_openclip(args: argparse.Namespace) -> dict:
    import open_clip
    import torch
    from PIL import Image

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    weights = str(Path(args.model) / "open_clip_model.safetensors")
    model, _, preprocess = open_clip.create_model_and_transforms(args.arch, pretrained=weights)
    model.eval()
    files = sorted(Path(args.images_dir).glob("*.jpg"))

    class Files(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(files)

        def __getitem__(self, i: int) -> torch.Tensor:
            return preprocess(Image.open(files[i]).convert("RGB"))

    loader = torch.utils.data.DataLoader(Files(), batch_size=args.batch_size, num_workers=args.workers)
    chunks = []
    with torch.no_grad():
        for batch in loader:
            features = model.encode_image(batch)
            chunks.append(torch.nn.functional.normalize(features, dim=-1).numpy())
    np.save(Path(args.out) / "embeddings.npy", np.concatenate(chunks))
    return {"seconds": time.perf_counter() - start, "images": len(files)}


def side_vislang(args: argparse.Namespace) -> dict:
    import torch

    from vislang.search.build import IndexOptions
    from vislang.search.scale import IndexJob, run_index

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    options = IndexOptions(batch_size=args.batch_size, workers=args.workers, quiet=True,
                           thumbnail_size=160 if args.thumbnails else None, quantize=args.quantize,
                           precision=args.precision)  # fmt: skip
    manifest = run_index(IndexJob(args.model, [args.images_dir], Path(args.out), options, faiss={"kind": "flat"}))
    return {"seconds": time.perf_counter() - start, "images": manifest["count"]}


def run_side(side: str, args: argparse.Namespace, out: Path, *extra: str) -> dict:
    out.mkdir(parents=True)
    command = [sys.executable, __file__, "--side", side, "--images-dir", args.images_dir, "--model", args.model,
               "--out", str(out), "--workers", str(args.workers), "--batch-size", str(args.batch_size),
               "--threads", str(args.threads), "--arch", args.arch, *extra]  # fmt: skip
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=thread_env(args))
    if done.returncode:
        raise SystemExit(f"{side} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result | {"process_seconds": time.perf_counter() - began}


def thread_env(args: argparse.Namespace) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(args.threads)}


def run_clip_retrieval(args: argparse.Namespace, out: Path) -> dict:
    """``clip inference`` of the venv on the same folder and weights file (a local OpenCLIP
    checkpoint: ``open_clip:ARCH/<absolute path>``), timed as a whole process."""
    clip = Path(args.clip_retrieval_venv) / "bin" / "clip-retrieval"
    if not clip.is_file():
        return {"error": f"no {clip}"}
    weights = str(Path(args.model) / "open_clip_model.safetensors")
    command = [str(clip), "inference", "--input_dataset", args.images_dir, "--output_folder", str(out),
               "--input_format", "files", "--enable_text", "False", "--enable_metadata", "False",
               "--clip_model", f"open_clip:{args.arch}/{weights}", "--use_jit", "False",
               "--batch_size", str(args.batch_size), "--num_prepro_workers", str(args.workers),
               "--enable_wandb", "False", "--output_partition_count", "1"]  # fmt: skip
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=thread_env(args))
    seconds = time.perf_counter() - began
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    stats = [json.loads(p.read_text()) for p in sorted((out / "stats").glob("*.json"))]
    loop = sum(s["total_duration"] for s in stats)  # its read + inference + write, after load and warm-up
    images = sum(len(np.load(p)) for p in sorted((out / "img_emb").glob("*.npy")))
    return {"process_seconds": seconds, "images": images, "seconds_in_loop": loop,
            "images_per_s_in_loop": round(images / loop, 2) if loop else None}  # fmt: skip


SIDES = {
    "openclip_loop": ("openclip", ()),
    "vislang_index": ("vislang", ("--thumbnails",)),
    "vislang_index_no_thumbnails": ("vislang", ()),
}


INT8 = {"vislang_index_int8": ("vislang", ("--thumbnails", "--quantize", "int8"))}
BF16 = {"vislang_index_bf16": ("vislang", ("--thumbnails", "--precision", "bf16"))}


def measure(args: argparse.Namespace, root: Path) -> dict:
    """Each side ``--repeats`` times, in turn (the order reversed every other round, so that a
    change in the machine's load falls on all sides); the median run of each, with every time."""
    sides = SIDES | (INT8 if args.int8 else {}) | (BF16 if args.bf16 else {})
    times: dict[str, list[dict]] = {name: [] for name in sides}
    for round_ in range(args.repeats):
        for name in list(sides) if round_ % 2 == 0 else list(sides)[::-1]:
            side, extra = sides[name]
            times[name].append(run_side(side, args, root / f"{name}-{round_}", *extra))
    runs = {}
    for name, results in times.items():
        median = sorted(results, key=lambda r: r["seconds"])[len(results) // 2]
        runs[name] = median | {"all_seconds": [round(r["seconds"], 1) for r in results]}
    runs["clip_retrieval"] = run_clip_retrieval(args, root / "cr") if args.clip_retrieval_venv else {"error": "skipped"}
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side, in turn (median reported)")
    parser.add_argument("--clip-retrieval-venv", default="/tmp/crvenv", help="'' to skip clip-retrieval")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--int8", action="store_true", help="also vislang index --quantize int8 (and its agreement)")
    parser.add_argument("--bf16", action="store_true", help="also vislang index --precision bf16 (and its agreement)")
    # a side run in its own process
    parser.add_argument("--side", choices=["openclip", "vislang"], help=argparse.SUPPRESS)
    parser.add_argument("--images-dir", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--thumbnails", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quantize", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps((side_openclip if args.side == "openclip" else side_vislang)(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_images(root / "images", args.images, args.size)
        write_model(root / "model", args.arch)
        args.images_dir, args.model = str(root / "images"), str(root / "model")
        runs = measure(args, root)
        ours = np.concatenate([np.asarray(v) for v in _parquet_embeddings(root / "vislang_index-0")])
        theirs = np.load(root / "openclip_loop-0" / "embeddings.npy")
        agreement = float(np.abs(ours - theirs).max())
        from vislang.search.quantize import agreement as closeness

        close = {}
        for name in ["vislang_index_int8"] * args.int8 + ["vislang_index_bf16"] * args.bf16:
            other = np.concatenate([np.asarray(v) for v in _parquet_embeddings(root / f"{name}-0")])
            close[name] = {k: round(v, 4) for k, v in closeness(theirs, other).items()}
    for run in runs.values():
        if "seconds" in run:
            run["images_per_s"] = round(run["images"] / run["seconds"], 2)
        if "process_seconds" in run:
            run["images_per_s_whole_process"] = round(run["images"] / run["process_seconds"], 2)
    runs["clip_retrieval"] = runs.pop("clip_retrieval")  # printed last
    base = runs["openclip_loop"]["images_per_s"]
    cr = runs["clip_retrieval"].get("images_per_s_whole_process")
    figures = {
        "cpu": cpu_line(),
        "python": platform.python_version(),
        "arch": args.arch,
        "images": args.images,
        "image_size": args.size,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "threads": args.threads,
        "repeats": args.repeats,
        "runs": runs,
        "ratio_vs_openclip": round(runs["vislang_index"]["images_per_s"] / base, 3),
        "ratio_vs_openclip_no_thumbnails": round(runs["vislang_index_no_thumbnails"]["images_per_s"] / base, 3),
        "ratio_vs_clip_retrieval_whole_process": round(runs["vislang_index"]["images_per_s_whole_process"] / cr, 3)
        if cr
        else None,
        "max_abs_embedding_difference_vs_openclip": agreement,
    }
    for name, agreement_ in close.items():
        figures[f"ratio_{name}_vs_openclip"] = round(runs[name]["images_per_s"] / base, 3)
        figures[f"{name}_agreement_vs_openclip_fp32"] = agreement_
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


def _parquet_embeddings(root: Path):
    import pyarrow.parquet as pq

    for part in sorted((root / "parts").glob("part-*.parquet")):
        yield pq.read_table(part, columns=["image_embedding"]).column("image_embedding").to_pylist()


if __name__ == "__main__":
    main()
