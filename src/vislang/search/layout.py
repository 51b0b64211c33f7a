"""The on-disk layout of an embedding index (``vislang index``), read by search and serve.

An index directory holds::

    manifest.json          what was indexed and how (written last, atomically)
    .job.json              the job's settings, written before the first part: a rerun with
                           other sources, model or part size is refused rather than mixed in
    parts/part-000000.parquet ...
    image.faiss            the image embeddings' faiss index (ids = row ids)
    text.faiss             the caption embeddings' index, where captions were indexed

A part holds the rows of ``part_size`` consecutive positions of the sources' sample order
(part ``p``: positions ``p * part_size`` up to the next part), so which rows a part holds is
known before it is embedded: a killed job rewrites only the parts that are missing, ranks and
Ray tasks split the parts among them, and the output does not depend on who wrote which part.
Each part is written to a temporary name and renamed, so a part that exists is complete.

Part columns: ``id`` (int64, the position: unique, stable), ``key`` (the image's path, relative
to the source, or its shard key or table row), ``caption`` (string or null),
``image_embedding`` and ``text_embedding`` (fixed-size lists of float32, L2-normalised; the text
one null without a caption) and ``thumbnail`` (JPEG bytes, null with ``--no-thumbnails``). A
sample that does not decode is left out of its part and counted in the part's metadata.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vislang.errors import DataError, first_line
from vislang.files import read_json

FORMAT = "vislang-index"
VERSION = 1
MANIFEST = "manifest.json"
PARTS = "parts"
FAISS_FILES = {"image": "image.faiss", "text": "text.faiss"}
COUNTS_KEY = b"vislang.skipped"  # a part's parquet metadata: its skipped samples by reason (JSON)


def part_path(root: str | Path, part: int) -> Path:
    return Path(root) / PARTS / f"part-{part:06d}.parquet"


def part_schema(dim: int) -> pa.Schema:
    vector = pa.list_(pa.float32(), dim)
    return pa.schema([
        ("id", pa.int64()),
        ("key", pa.string()),
        ("caption", pa.string()),
        ("image_embedding", vector),
        ("text_embedding", vector),
        ("thumbnail", pa.binary()),
    ])  # fmt: skip


def _vectors(rows: np.ndarray | None, n: int, dim: int, present: list[bool] | None = None) -> pa.Array:
    if rows is None:
        return pa.nulls(n, pa.list_(pa.float32(), dim))
    flat = pa.array(np.ascontiguousarray(rows, dtype=np.float32).reshape(-1))
    mask = None if present is None else pa.array([not p for p in present])
    return pa.FixedSizeListArray.from_arrays(flat, dim, mask=mask)


def write_part(
    root: str | Path,
    part: int,
    ids: list[int],
    keys: list[str],
    captions: list[str | None],
    image_embeddings: np.ndarray,
    text_embeddings: np.ndarray | None,
    thumbnails: list[bytes | None],
    skipped: dict[str, int],
) -> Path:
    """Write one part atomically (rows in position order; ``text_embeddings`` rows for captionless
    rows are ignored, stored as nulls). Returns its path."""
    n, dim = image_embeddings.shape
    if not (len(ids) == len(keys) == len(captions) == len(thumbnails) == n):
        raise ValueError("a part's columns differ in length")
    present = [c is not None for c in captions]
    table = pa.table(
        [
            pa.array(ids, pa.int64()),
            pa.array(keys, pa.string()),
            pa.array(captions, pa.string()),
            _vectors(image_embeddings, n, dim),
            _vectors(text_embeddings, n, dim, present) if text_embeddings is not None else _vectors(None, n, dim),
            pa.array(thumbnails, pa.binary()),
        ],
        schema=part_schema(dim).with_metadata({COUNTS_KEY: json.dumps(skipped, sort_keys=True).encode()}),
    )
    path = part_path(root, part)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        tmp.replace(path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot write index part {path}: {first_line(error)}") from None
    return path


def done_parts(root: str | Path) -> set[int]:
    """The parts already written (complete by construction: parts are renamed into place)."""
    folder = Path(root) / PARTS
    if not folder.is_dir():
        return set()
    return {int(p.stem.split("-")[1]) for p in folder.glob("part-*.parquet")}


def read_parts(root: str | Path, columns: list[str]) -> Iterator[pa.Table]:
    """Every part's ``columns``, in part order; a part that cannot be read is one line naming it."""
    for part in sorted(done_parts(root)):
        path = part_path(root, part)
        try:
            yield pq.read_table(path, columns=columns)
        except (OSError, pa.ArrowException) as error:
            raise DataError(f"cannot read index part {path}: {first_line(error)}") from None


def part_skipped(root: str | Path, part: int) -> dict[str, int]:
    metadata = pq.read_schema(part_path(root, part)).metadata or {}
    return json.loads(metadata.get(COUNTS_KEY, b"{}"))


def embeddings(root: str | Path, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids [N] int64, embeddings [N, D] float32) of ``kind`` (image | text) over all parts,
    rows without that embedding (captionless rows, for text) left out."""
    column = f"{kind}_embedding"
    ids, rows = [], []
    for table in read_parts(root, ["id", column]):
        vectors = table.column(column).combine_chunks()
        keep = np.asarray(vectors.is_valid())
        if not keep.any():
            continue
        dim = vectors.type.list_size
        values = vectors.filter(pa.array(keep)).flatten().to_numpy(zero_copy_only=False)
        rows.append(values.reshape(-1, dim))
        ids.append(table.column("id").to_numpy()[keep])
    if not rows:
        return np.empty(0, np.int64), np.empty((0, 0), np.float32)
    return np.concatenate(ids), np.concatenate(rows).astype(np.float32, copy=False)


def write_manifest(root: str | Path, manifest: dict) -> Path:
    """manifest.json, atomically; ``format`` and ``version`` are set here."""
    path = Path(root) / MANIFEST
    tmp = path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"format": FORMAT, "version": VERSION, **manifest}, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def read_manifest(root: str | Path) -> dict:
    """An index's manifest, checked to be one: a wrong path is one line."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise DataError(f"{root}: not a vislang index (no {MANIFEST}; write one with vislang index)")
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path}: not a vislang index manifest")
    if manifest.get("version") != VERSION:
        raise DataError(f"{path}: index format version {manifest.get('version')!r}, this vislang reads {VERSION}")
    return manifest
