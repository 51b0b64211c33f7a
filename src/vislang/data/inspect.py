"""``vislang data inspect`` and ``vislang data bench``: look at a source before training on it.

inspect: decode ``n`` samples of the stream as training would (without the random crop) and
report bad samples by reason, caption lengths (words) and original image sizes, with a PNG of
both histograms.
bench: samples/s of the whole pipeline (decode, transform, tokenise, batch) in worker processes.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
from PIL import Image

from vislang.config import DataConfig, TrainConfig, VisionConfig
from vislang.data import build_sources, first_pass, train_loader
from vislang.data.decode import BadSample, ImageRef, SampleDecoder


@dataclass(frozen=True)
class SizeRecorder(SampleDecoder):
    """A :class:`SampleDecoder` that also records each decoded image's size before the transform
    (the original sizes are what inspect reports; the transformed ones are all the same)."""

    sizes: list[tuple[int, int]] = field(default_factory=list)

    def open(self, image: ImageRef) -> Image.Image:
        opened = super().open(image)
        self.sizes.append(opened.size)
        return opened


def inspect_source(data: DataConfig, image_size: int, n: int) -> dict:
    """Decode the first ``n`` samples of the one source of ``data`` as evaluation would (no random
    crop) and gather the statistics :func:`summary_lines` reports."""
    (source,) = build_sources(data, image_size, seed=0, train=False, check=False).values()
    sizes: list[tuple[int, int]] = []
    if source.decoder is not None:  # the world renders its images: nothing is decoded
        recorder = SizeRecorder(**{f.name: getattr(source.decoder, f.name) for f in fields(source.decoder)})
        source.decoder, sizes = recorder, recorder.sizes
    lengths, skipped, total = [], Counter(), 0
    for position, read in enumerate(first_pass(source)):
        if position == n:
            break
        total += 1
        try:
            _, caption = read(np.random.default_rng(position))
        except BadSample as bad:
            skipped[bad.reason] += 1
            continue
        lengths.append(len(caption.split()))
    return {
        "samples": total,
        "usable": len(lengths),
        "skipped": dict(skipped),
        "caption_words": lengths,
        "image_sizes": sizes,
        "description": source.describe(),
    }


def summary_lines(report: dict) -> list[str]:
    lines = [f"{report['usable']} of {report['samples']} samples usable. {report['description']}".strip()]
    for reason, count in sorted(report["skipped"].items()):
        lines.append(f"  skipped {reason}: {count}")
    words = np.asarray(report["caption_words"])
    if len(words):
        lines.append(
            f"caption words: median {np.median(words):.0f}, 95th percentile {np.percentile(words, 95):.0f}, "
            f"max {words.max()}"
        )
    if report["image_sizes"]:
        w, h = np.asarray(report["image_sizes"]).T
        lines.append(
            f"image sizes: median {np.median(w):.0f}x{np.median(h):.0f}, smallest side min {min(w.min(), h.min())}"
        )
    return lines


def write_histograms(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    axes[0].hist(report["caption_words"], bins=30)
    axes[0].set_xlabel("caption length (words)")
    if report["image_sizes"]:
        axes[1].hist(np.min(np.asarray(report["image_sizes"]), axis=1), bins=30)
    axes[1].set_xlabel("image shortest side (px)")
    for ax in axes:
        ax.set_ylabel("samples")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def pipeline_throughput(data: DataConfig, image_size: int, batch_size: int, batches: int, tokenizer) -> float:
    """Samples per second of ``batches`` training batches built in ``data.num_workers`` workers,
    with the random crop on (the costliest transform training can use)."""
    data = data.model_copy(update={"random_crop": True})
    # Only the image size and the default normalisation are read: no tower is built, so the
    # tower's own checks (a patch size that divides the image) must not reject the size.
    vision = VisionConfig.model_construct(image_size=image_size)
    loader, _ = train_loader(data, vision, TrainConfig(steps=batches + 2, batch_size=batch_size), tokenizer, 0)
    next(loader), next(loader)  # workers started
    start, samples = time.perf_counter(), 0
    for batch in loader:
        samples += len(batch.get("image", []))
    return samples / (time.perf_counter() - start)
