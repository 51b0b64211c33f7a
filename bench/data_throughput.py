"""Data pipeline throughput: vislang's shard sources (random access and streamed) vs OpenCLIP's
webdataset pipeline, same shards.

Writes JPEG shards of the built-in world at 256 px (``vislang data synth --format jpg``), then
measures samples/s of training batches (decode, random-resized crop to 224 px, normalise,
tokenise, batch) with the same worker count and batch size for both pipelines in one run, and
the resident memory of the worker processes after epoch 1 and epoch 3.

Needs the test extra plus ``pandas`` (imported by OpenCLIP's training package) and
``webdataset==0.2.86``: OpenCLIP's pipeline fails with webdataset 1.0 (KeyError 'fname' in its
own ``group_by_keys_nothrow``); vislang reads shards with ``tarfile`` and works with both.
Usage: python bench/data_throughput.py [--samples 4096] [--workers 2] [--batch 128] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch


def children_rss_mib() -> float:
    """Summed RSS of this process's child processes (the data workers), from /proc."""
    total = 0
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for pid in (task / "children").read_text().split():
            status = Path(f"/proc/{pid}/status")
            if status.exists():
                for line in status.read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
    return total / 1024


def run_epochs(make_loader, epochs: int) -> tuple[float, list[float]]:
    """samples/s over all epochs after the first batch, and worker RSS after each epoch."""
    rss, samples, start = [], 0, None
    for _ in range(epochs):
        for batch in make_loader():
            if start is None:
                start = time.perf_counter()  # workers are up
                continue
            samples += len(batch[0]) if isinstance(batch, (list, tuple)) else len(batch["image"])
        rss.append(children_rss_mib())
    return samples / (time.perf_counter() - start), rss


def vislang_pipeline(spec: str, args, samples_per_epoch: int, access: str = "random"):
    from vislang.data import build_sources, tokenizer_corpus, train_loader
    from vislang.experiment import build_config
    from vislang.tokenizers import BPETokenizer

    steps_per_epoch = samples_per_epoch // args.batch
    cfg = build_config(
        {},
        [
            f"data.sources=[{{kind: shards, path: '{spec}', access: {access}}}]",
            "model.vision.image_size=224",
            "model.vision.patch_size=16",
            "model.text.context_length=77",
            "data.random_crop=true",
            f"data.num_workers={args.workers}",
            f"train.batch_size={args.batch}",
            f"train.steps={steps_per_epoch * args.epochs}",
        ],
    )
    sources = build_sources(cfg.data, cfg.model.vision.image_size, cfg.train.seed)
    tokenizer = BPETokenizer.train(tokenizer_corpus(sources, cfg.tokenizer.train_texts), 512, 77)
    loader, _ = train_loader(cfg.data, cfg.model.vision, cfg.train, tokenizer, 0)  # builds its own sources, as before
    # one loader over all epochs (vislang's stream is endless); cut it into epochs for the RSS reading
    epoch = iter(lambda: [next(loader) for _ in range(steps_per_epoch)], None)
    return lambda: next(epoch)


def openclip_pipeline(spec: str, args, samples_per_epoch: int):
    import open_clip
    from open_clip_train.data import get_wds_dataset

    preprocess = open_clip.image_transform(224, is_train=True)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    options = SimpleNamespace(
        train_data=spec,
        train_num_samples=samples_per_epoch,
        train_data_upsampling_factors=None,
        dataset_resampled=False,
        batch_size=args.batch,
        workers=args.workers,
        world_size=1,
        seed=0,
    )
    info = get_wds_dataset(options, preprocess, is_train=True, epoch=0, tokenizer=tokenizer)
    state = {"epoch": 0}

    def make():  # as OpenCLIP's training loop does: one loader, the epoch set before each pass
        info.set_epoch(state["epoch"])
        state["epoch"] += 1
        return info.dataloader

    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from vislang.data.make_shards import world_records, write_shards
    from vislang.data.world import World

    with tempfile.TemporaryDirectory() as tmp:
        write_shards(world_records(World(256), args.samples, image_format="jpg"), tmp, args.samples // args.shards)
        spec = f"{tmp}/{{00000..{args.shards - 1:05d}}}.tar"
        print(
            f"{args.samples} JPEG samples (256 px) in {args.shards} shards; 224 px random-resized crop, "
            f"batch {args.batch}, {args.workers} workers, {args.epochs} epochs"
        )
        results = {}
        pipelines = (
            ("vislang", vislang_pipeline),
            ("vislang-stream", lambda *a: vislang_pipeline(*a, access="stream")),
            ("open_clip", openclip_pipeline),
        )
        for name, factory in pipelines:
            rate, rss = run_epochs(factory(spec, args, args.samples), args.epochs)
            results[name] = rate
            growth = (rss[-1] / rss[0] - 1) * 100 if rss[0] else float("nan")
            print(
                f"  {name:14s} {rate:8.1f} samples/s   worker RSS MiB per epoch: "
                f"{', '.join(f'{r:.0f}' for r in rss)} ({growth:+.1f}% epoch 1 -> {args.epochs})"
            )
        for name in ("vislang", "vislang-stream"):
            print(f"  {name} / open_clip: {results[name] / results['open_clip']:.2f}x")


if __name__ == "__main__":
    main()
