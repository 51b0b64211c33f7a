"""Small builders for shard tests: PNG bytes and tar files from (name, bytes) members."""

from __future__ import annotations

import io
import tarfile

from PIL import Image


def png(color=(200, 30, 30), size=(20, 20)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def write_tar(path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


# The broken_shards fixture (conftest.py) holds 11 raw samples, 8 of them broken, by reason:
BROKEN_SKIPS = {
    "bad_image": 2,  # garbage bytes, truncated PNG
    "empty_caption": 1,
    "bad_text": 1,
    "missing_caption": 1,
    "missing_image": 1,
    "too_large": 1,
    "truncated_shard": 1,
}


def skips_after_two_passes(source: str, overrides: list[str], run_dir) -> dict[str, float]:
    """Train two steps of 11 samples (two passes over the broken shards) on ``source`` (a
    ``data.sources`` entry) and return the run's skip counts by reason."""
    from vislang.experiment import build_config
    from vislang.train.loop import train

    cfg = build_config(
        {},
        overrides
        + [
            f"data.sources=[{source}]",
            "data.max_image_pixels=10000",
            "train.batch_size=11",
            "train.steps=2",
            "train.eval_every=2",
            "train.checkpoint_every=2",
            "eval.tasks=[{type: zeroshot, n: 40}]",
        ],
    )
    metrics = train(cfg, run_dir, quiet=True)
    return {k.removeprefix("data/skipped/"): v for k, v in metrics.items() if k.startswith("data/skipped/")}
