"""Images/s of zero-shot classification plus retrieval on the same model and data: vislang's
suite against CLIP_benchmark 1.6.2's own evaluate functions, in the same run, numbers compared.

The model is a randomly initialised OpenCLIP model (default ViT-B-32) saved as an OpenCLIP
folder; vislang opens that folder (converted on load), CLIP_benchmark gets the OpenCLIP module
with OpenCLIP's preprocessing. The data are synthetic JPEGs (no downloads) written twice over the
same files: an ImageFolder tree for zero-shot (OpenAI's 80 ImageNet templates) and a Karpathy
JSON with five captions per image for retrieval (about ten words each, four of them distinct to the
image and one shared by its class: real caption sets repeat some captions).

Both sides decode with the same number of loader workers and run in fp32. The figure is
(images classified + images retrieved) / wall seconds. vislang's suite encodes each image once
for both tasks (its feature cache); the per-task rows show where the difference comes from.

    python bench/eval_throughput.py [--images 1000] [--arch ViT-B-32] [--workers 2] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _machine import cpu_line
from PIL import Image

CLASSES = ["apple", "boat", "car", "dog", "egg", "fern", "goat", "house", "igloo", "jeep"]


def write_data(root: Path, n: int) -> tuple[Path, Path]:
    """An ImageFolder tree and a Karpathy JSON over the same JPEGs, in the same order."""
    rng = np.random.default_rng(0)
    folder, entries = root / "folder", []
    for name in CLASSES:
        (folder / name).mkdir(parents=True)
    per_class = [n // len(CLASSES) + (1 if c < n % len(CLASSES) else 0) for c in range(len(CLASSES))]
    for c, name in enumerate(CLASSES):
        for i in range(per_class[c]):
            small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
            image = Image.fromarray(small).resize((320, 240), Image.BICUBIC)
            image.save(folder / name / f"{i:05d}.jpg", quality=90)
            captions = [  # COCO-like: about ten words, nearly all distinct, one shared per class
                f"a photo of a {name} number {i} standing next to a grey wall",
                f"the {name} seen from angle {i % 13} with {i % 5} other things nearby",
                f"a picture of {i % 17} small {name}s on a table in a room",
                f"an old {name} in scene {i} under a cloudy sky",
                f"a photo of a {name}",
            ]
            entries.append({"filepath": name, "filename": f"{i:05d}.jpg", "split": "test",
                            "sentences": [{"raw": t} for t in captions]})  # fmt: skip
    karpathy = root / "dataset_karpathy.json"
    karpathy.write_text(json.dumps({"images": entries}))
    return folder, karpathy


def open_clip_folder(path: Path, arch: str) -> torch.nn.Module:
    import open_clip
    import safetensors.torch

    torch.manual_seed(0)
    model = open_clip.create_model(arch, pretrained=None).eval()
    path.mkdir()
    config = {"model_cfg": open_clip.get_model_config(arch), "preprocess_cfg": {}}
    (path / "open_clip_config.json").write_text(json.dumps(config))
    safetensors.torch.save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "open_clip_model.safetensors")
    )
    return model


def run_clip_benchmark(model, arch: str, folder: Path, karpathy: Path, templates, args) -> dict:
    import open_clip
    import torchvision
    from clip_benchmark.datasets.builder import image_captions_collate_fn
    from clip_benchmark.metrics import zeroshot_classification as zsc
    from clip_benchmark.metrics import zeroshot_retrieval as zsr

    def accuracy(output, target, topk=(1,)):  # numpy 2 refuses its float(array); same arithmetic
        pred = output.topk(max(topk), 1, True, True)[1].t()
        correct = pred.eq(target.view(1, -1).expand_as(pred))
        return [correct[:k].reshape(-1).float().sum(0, keepdim=True).item() / len(target) for k in topk]

    zsc.accuracy = accuracy
    preprocess = open_clip.image_transform(model.visual.image_size, is_train=False)
    tokenizer = open_clip.get_tokenizer(arch)
    data = torchvision.datasets.ImageFolder(str(folder), transform=preprocess)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size, num_workers=args.workers)
    start = time.perf_counter()
    classification = zsc.evaluate(model, loader, tokenizer, CLASSES, templates, "cpu", amp=False)
    middle = time.perf_counter()
    entries = json.loads(karpathy.read_text())["images"]

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return len(entries)

        def __getitem__(self, i):
            e = entries[i]
            image = Image.open(folder / e["filepath"] / e["filename"]).convert("RGB")
            return preprocess(image), [s["raw"] for s in e["sentences"]]

    pairs = torch.utils.data.DataLoader(
        Pairs(), batch_size=args.batch_size, num_workers=args.workers, collate_fn=image_captions_collate_fn
    )
    retrieval = zsr.evaluate(model, pairs, tokenizer, "cpu", amp=False, recall_k_list=[1, 5, 10])
    end = time.perf_counter()
    return {"classification": classification, "retrieval": retrieval, "seconds": (middle - start, end - middle)}


def run_vislang(model_dir: Path, folder: Path, karpathy: Path, templates, args, separate: bool = False) -> dict:
    """The two tasks in one suite (one feature cache), or with ``separate`` each in its own
    suite run (each encodes its images: what the shared cache saves)."""
    from vislang.api import load_objective
    from vislang.eval.suite import SuiteConfig, run_suite
    from vislang.experiment import eval_context

    objective, tokenizer, cfg = load_objective(model_dir)
    suite = SuiteConfig(
        tasks=[
            {"type": "zeroshot", "dataset": {"format": "imagefolder", "path": str(folder), "name": "bench",
                                             "classnames": CLASSES, "templates": templates}},
            {"type": "retrieval", "ks": [1, 5, 10], "dataset": {"format": "karpathy", "path": str(karpathy),
                                                                 "images": str(folder), "name": "bench"}},
        ]
    )  # fmt: skip
    context = eval_context(cfg, tokenizer, args.batch_size, args.workers)
    start = time.perf_counter()
    if separate:
        results = [r for task in suite.tasks for r in run_suite(objective, [task], context)]
    else:
        results = run_suite(objective, suite.tasks, context)
    total = time.perf_counter() - start
    return {"results": results, "seconds": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from vislang.data.prompts import template_set

    templates = template_set("openai_imagenet")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder, karpathy = write_data(root, args.images)
        model = open_clip_folder(root / "oc", args.arch)
        theirs = run_clip_benchmark(model, args.arch, folder, karpathy, templates, args)
        ours = run_vislang(root / "oc", folder, karpathy, templates, args)
        apart = run_vislang(root / "oc", folder, karpathy, templates, args, separate=True)
    zs, rt = ours["results"]
    pairs = [
        (zs.metrics["top1"], theirs["classification"]["acc1"]),
        (zs.metrics["top5"], theirs["classification"]["acc5"]),
        (zs.metrics["mean_per_class_recall"], theirs["classification"]["mean_per_class_recall"]),
    ] + [(rt.metrics[f"text_to_image/R@{k}"], theirs["retrieval"][f"image_retrieval_recall@{k}"]) for k in (1, 5, 10)]
    pairs += [
        (rt.metrics[f"image_to_text/R@{k}"], theirs["retrieval"][f"text_retrieval_recall@{k}"]) for k in (1, 5, 10)
    ]
    diff = max(abs(a - b) for a, b in pairs)
    n_task_images = 2 * args.images
    their_total = sum(theirs["seconds"])
    rows = {
        "cpu": cpu_line(),
        "torch": torch.__version__,
        "arch": args.arch,
        "images": args.images,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "clip_benchmark_seconds": {
            "zeroshot": round(theirs["seconds"][0], 2),
            "retrieval": round(theirs["seconds"][1], 2),
        },
        "vislang_seconds": {"zeroshot": round(zs.seconds, 2), "retrieval": round(rt.seconds, 2)},
        "vislang_images_encoded": zs.images_encoded + rt.images_encoded,
        "vislang_tasks_apart_seconds": round(apart["seconds"], 2),
        "vislang_tasks_apart_images_per_s": round(n_task_images / apart["seconds"], 2),
        "ratio_tasks_apart": round(their_total / apart["seconds"], 3),
        "clip_benchmark_images_per_s": round(n_task_images / their_total, 2),
        "vislang_images_per_s": round(n_task_images / ours["seconds"], 2),
        "ratio": round(their_total / ours["seconds"], 3),
        "max_metric_difference": diff,
        "metrics": {"acc1": zs.metrics["top1"], "image_retrieval_recall@1": rt.metrics["text_to_image/R@1"]},
    }
    print(json.dumps(rows, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
