"""Writing the curated training set: the pool's samples whose uid every stage kept, as shards.

Keep lists are read from what the stages write: ``subset.txt`` (one uid per line) or DataComp's
``u8,u8`` ``subset.npy`` (filter), ``dedup.parquet`` (its ``keep`` column), a balance output
folder (the uids of ``kept/*.parquet``) or a CapFilt output folder (images that kept a caption;
the first kept caption replaces the original). Samples go to webdataset shards in the img2dataset
layout (``vislang data make-shards``' writer), images copied byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vislang.curate.images import expand_image_inputs, read_pairs
from vislang.data.make_shards import write_shards
from vislang.errors import DataError


def read_keep(spec: str | Path) -> tuple[set[str], dict[str, str]]:
    """(kept uids, replacement captions) of one stage output."""
    import pyarrow.parquet as pq

    path = Path(spec)
    if path.is_dir() and (path / "kept").is_dir():  # curate balance
        return {
            u for f in sorted((path / "kept").glob("*.parquet")) for u in pq.read_table(f).column("uid").to_pylist()
        }, {}
    if path.is_dir() and (path / "capfilt.json").is_file():  # curate capfilt
        uids, captions = set(), {}
        for f in sorted(path.glob("*.parquet")):
            for row in pq.read_table(f, columns=["uid", "kept"]).to_pylist():
                if row["kept"]:
                    uids.add(row["uid"])
                    captions[row["uid"]] = row["kept"][0]
        return uids, captions
    if path.is_dir() and (path / "dedup.parquet").is_file():
        path = path / "dedup.parquet"
    if path.suffix == ".parquet":
        table = pq.read_table(path, columns=["uid", "keep"]).to_pydict()
        return {u for u, k in zip(table["uid"], table["keep"]) if k}, {}
    if path.suffix == ".npy":
        pairs = np.load(path)
        return {f"{int(a):016x}{int(b):016x}" for a, b in pairs.tolist()}, {}
    if path.suffix == ".txt":
        return {line.strip() for line in path.read_text().splitlines() if line.strip()}, {}
    raise DataError(f"{path}: not a stage output (subset.txt/.npy, dedup.parquet, a balance or capfilt folder)")


def export_subset(inputs: list[str], keeps: list[str], out: str | Path, shard_size: int = 10000) -> dict[str, int]:
    """Write the samples kept by every stage in ``keeps`` as shards; returns {shard: samples}."""

    if not keeps:
        raise DataError("give at least one --keep list")
    wanted: set[str] | None = None
    captions: dict[str, str] = {}
    for spec in keeps:
        uids, replaced = read_keep(spec)
        wanted = uids if wanted is None else wanted & uids
        captions |= replaced

    def records() -> Iterator[tuple[str, bytes, str, list[str], dict]]:
        for file in expand_image_inputs(inputs):
            for uid, caption, data in read_pairs(file):
                if uid in wanted and data:
                    extension = "jpg" if data[:2] == b"\xff\xd8" else "png" if data[:4] == b"\x89PNG" else "webp"
                    key = uid.replace("/", "_").replace(".", "_")
                    yield key, data, extension, [captions.get(uid, caption)], {"uid": uid}

    sizes = write_shards(records(), out, shard_size)
    if not sizes:
        raise DataError("no sample of the pool is in every keep list")
    return sizes
