"""Duplicate removal within a pool and against evaluation sets.

Three descriptors, chosen by ``method``:

- ``sha256`` of the encoded bytes: exact copies only;
- ``phash``: a 64-bit perceptual hash (DCT of the 32x32 grey image, ``imagehash``), model-free;
  two images are duplicates at Hamming distance <= ``threshold`` (bits);
- ``embedding``: the image embeddings of a model (any checkpoint ``vislang.load`` opens);
  duplicates at cosine similarity >= ``threshold``. The right threshold belongs to the model
  (SSCD-style copy-detection descriptors use about 0.6 within a pool and 0.45 against evaluation
  sets), so it has no default.

Pairs come from a k-NN range search (faiss: binary Hamming index for hashes, inner product for
embeddings), duplicates are grouped by connected components and the first image of each group
(in pool order) is kept. With ``against``, every pool image within the threshold of an
evaluation image is removed too.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from vislang.curate.engine import run_tasks
from vislang.curate.images import expand_image_inputs, read_images
from vislang.curate.models import ImageEncoder
from vislang.errors import ConfigError, DataError

METHODS = ("sha256", "phash", "embedding")
DEFAULT_THRESHOLD = {"sha256": 0.0, "phash": 6.0}  # phash: see docs/curation.md (false merges grow with N²)


def phash(data: bytes) -> np.ndarray:
    """The 64-bit DCT perceptual hash of an encoded image, packed in 8 bytes."""
    import imagehash
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        bits = imagehash.phash(image.convert("RGB"), hash_size=8).hash
    return np.packbits(bits.flatten())


def describe_file(path: str, out: str, method: str, checkpoint: str | None, name: str) -> dict[str, Any]:
    """Descriptors of one pool file's images (unreadable images skipped and counted)."""
    uids, descriptors, skipped = [], [], 0
    encoder = ImageEncoder(checkpoint) if method == "embedding" else None
    for uid, data in read_images(Path(path)):
        try:
            if method == "sha256":
                descriptors.append(hashlib.sha256(data).hexdigest())
            elif method == "phash":
                descriptors.append(phash(data))
            else:
                from PIL import Image

                with Image.open(io.BytesIO(data)) as image:
                    encoder.add(image.convert("RGB"))
            uids.append(uid)
        except Exception:  # PIL raises many types for broken images
            skipped += 1
    if encoder is not None:
        array = encoder.result()
    elif method == "phash":
        array = np.stack(descriptors) if descriptors else np.zeros((0, 8), np.uint8)
    else:
        array = np.array(descriptors, dtype="U64")
    np.save(Path(out) / f"{name}.npy", array)
    (Path(out) / f"{name}.uids.json").write_text(json.dumps(uids))
    return {"file": path, "images": len(uids), "skipped": skipped}


def duplicate_pairs(a: np.ndarray, b: np.ndarray | None, method: str, threshold: float) -> np.ndarray:
    """[P, 2] index pairs (i in a, j in b, or i < j within a) of duplicates."""
    import faiss

    within = b is None
    b = a if within else b
    if not len(a) or not len(b):
        return np.zeros((0, 2), np.int64)
    if method == "sha256":
        index: dict[str, list[int]] = {}
        for j, digest in enumerate(b):
            index.setdefault(str(digest), []).append(j)
        pairs = [(i, j) for i, digest in enumerate(a) for j in index.get(str(digest), [])]
        pairs_array = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    elif method == "phash":
        search = faiss.IndexBinaryFlat(64)
        search.add(np.ascontiguousarray(b, dtype=np.uint8))
        lims, _, ids = search.range_search(np.ascontiguousarray(a, dtype=np.uint8), int(threshold) + 1)
        pairs_array = np.stack([np.repeat(np.arange(len(a)), np.diff(lims).astype(np.int64)), ids], axis=1).astype(
            np.int64
        )
    else:
        vectors_b = np.ascontiguousarray(b, dtype=np.float32)
        search = faiss.IndexFlatIP(vectors_b.shape[1])
        search.add(vectors_b)
        # faiss keeps inner products strictly above the radius
        lims, _, ids = search.range_search(np.ascontiguousarray(a, dtype=np.float32), float(threshold) - 1e-6)
        pairs_array = np.stack([np.repeat(np.arange(len(a)), np.diff(lims).astype(np.int64)), ids], axis=1).astype(
            np.int64
        )
    if within:
        pairs_array = pairs_array[pairs_array[:, 0] < pairs_array[:, 1]]
    return pairs_array


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Group id per item: the smallest index of its connected component (union-find)."""
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs.tolist():
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return np.array([root(i) for i in range(n)], dtype=np.int64)


def _describe_pool(inputs: list[str], folder: Path, method: str, checkpoint: str | None, engine: str,
                   processes: int) -> tuple[list[str], np.ndarray, list[dict]]:  # fmt: skip
    files = expand_image_inputs(inputs)
    folder.mkdir(parents=True, exist_ok=True)
    tasks = [{"path": str(f.resolve()), "out": str(folder.resolve()), "method": method, "checkpoint": checkpoint,
              "name": f"{i:05d}"} for i, f in enumerate(files)]  # fmt: skip
    results = run_tasks(describe_file, tasks, engine, processes, fork=method != "embedding")
    uids: list[str] = []
    arrays = []
    for task in tasks:
        uids += json.loads((folder / f"{task['name']}.uids.json").read_text())
        arrays.append(np.load(folder / f"{task['name']}.npy"))
    nonempty = [a for a in arrays if len(a)]
    return uids, (np.concatenate(nonempty) if nonempty else arrays[0]), results


def dedup_pool(
    inputs: list[str],
    out: str | Path,
    method: str = "phash",
    threshold: float | None = None,
    against: list[str] | None = None,
    against_threshold: float | None = None,
    checkpoint: str | None = None,
    engine: str = "local",
    processes: int = 1,
) -> dict[str, Any]:
    """Group duplicates of the pool, keep one per group, drop images near an evaluation set;
    write ``dedup.parquet`` (uid, group, keep, near_eval) and ``dedup.json``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if method not in METHODS:
        raise ConfigError(f"unknown dedup method {method!r} ({', '.join(METHODS)})")
    try:
        import faiss  # noqa: F401
        import imagehash  # noqa: F401
    except ImportError:
        raise ConfigError("vislang curate dedup needs imagehash and faiss-cpu: pip install 'vislang[curate]'") from None
    if method == "embedding" and checkpoint is None:
        raise ConfigError("--method embedding needs --checkpoint (the model whose image embeddings are compared)")
    if threshold is None:
        if method not in DEFAULT_THRESHOLD:
            raise ConfigError("--method embedding needs --threshold: a cosine similarity that belongs to the model")
        threshold = DEFAULT_THRESHOLD[method]
    out = Path(out)
    uids, descriptors, results = _describe_pool(inputs, out / "descriptors", method, checkpoint, engine, processes)
    if not uids:
        raise DataError("no readable image in the pool")
    groups = components(len(uids), duplicate_pairs(descriptors, None, method, threshold))
    keep = groups == np.arange(len(uids))
    near_eval = np.zeros(len(uids), dtype=bool)
    if against:
        _, eval_descriptors, _ = _describe_pool(against, out / "eval_descriptors", method, checkpoint, engine,
                                                processes)  # fmt: skip
        limit = threshold if against_threshold is None else against_threshold
        pairs = duplicate_pairs(descriptors, eval_descriptors, method, limit)
        near_eval[np.unique(pairs[:, 0])] = True
    kept = keep & ~near_eval
    table = pa.table({"uid": uids, "group": groups, "keep": kept, "duplicate": ~keep, "near_eval": near_eval})
    pq.write_table(table, out / "dedup.parquet")
    summary = {
        "method": method,
        "threshold": threshold,
        "images": len(uids),
        "skipped_unreadable": sum(r["skipped"] for r in results),
        "duplicate_groups": int(len(np.unique(groups[~keep]))),
        "removed_duplicates": int((~keep).sum()),
        "removed_near_eval": int((near_eval & keep).sum()),
        "kept": int(kept.sum()),
    }
    (out / "dedup.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
