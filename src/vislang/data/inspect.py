"""``vislang data inspect`` and ``vislang data bench``: look at a source before training on it.

inspect: decode ``n`` samples of the stream as training would and report bad samples by
reason, caption lengths (words) and original image sizes, with a PNG of both histograms.
bench: samples/s of the whole pipeline (decode, transform, tokenise, batch) in worker processes.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np

from vislang.config import RunConfig, build_config
from vislang.data.decode import BadSample


def source_config(kind: str, path: str | None, extra: list[str] = (), image_size: int = 224) -> RunConfig:
    source = f"{{kind: {kind}" + (f", path: '{path}'" if path else "") + "}"
    return build_config(
        {}, [f"data.sources=[{source}]", f"model.vision.image_size={image_size}", *extra], source="data source"
    )


def inspect_source(cfg: RunConfig, n: int) -> dict:
    from vislang.data import build_sources, first_pass

    (source,) = build_sources(cfg, train=False, check=False).values()
    sizes, lengths, skipped = [], [], Counter()
    original = getattr(source, "transform", None)

    class Recorder:  # records each decoded image's size before the transform
        def __call__(self, image, rng=None):
            sizes.append(image.size)
            return original(image, rng)

    if original is not None:
        source.transform = Recorder()
    total = 0
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
        "description": source.describe() if hasattr(source, "describe") else "",
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


def pipeline_throughput(cfg: RunConfig, batches: int, tokenizer) -> float:
    """Samples per second of ``batches`` training batches built in ``data.num_workers`` workers."""
    from vislang.data import train_loader

    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": batches + 2})})
    loader, _ = train_loader(cfg, tokenizer, 0)
    next(loader), next(loader)  # workers started
    start, samples = time.perf_counter(), 0
    for batch in loader:
        samples += len(batch.get("image", []))
    return samples / (time.perf_counter() - start)
