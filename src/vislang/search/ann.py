"""The faiss indexes of an embedding index: exact for small collections, approximate and tuned
for large ones.

Embeddings are L2-normalised, so inner product is cosine similarity. What ``kind: auto`` builds
follows the collection's size: an exact flat index while a query's full scan is cheap, an HNSW
graph over the raw vectors while they fit in memory, and IVF-PQ (compressed codes, coarse
quantiser of ``4 sqrt(N)`` lists) beyond. Every flag can override the choice.

An approximate index is only as good as its search-time parameter (``efSearch`` for HNSW,
``nprobe`` for IVF), so the builder tunes it as autofaiss does: queries are drawn from the
collection (caption embeddings where there are enough, being what text search asks), their
exact top-k found by a flat scan, and the smallest parameter whose recall@k reaches the target
is stored with the index and set again when it is opened.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from vislang.errors import ConfigError, DataError, first_line
from vislang.search.layout import FAISS_FILES, embeddings

KINDS = ("auto", "flat", "hnsw", "ivfpq")
EXACT_MAX = 50_000  # auto: a flat index up to this many vectors
HNSW_MAX_BYTES = 8 << 30  # auto: HNSW while the raw vectors take at most this much memory
TUNE_QUERIES = 256
TUNE_K = 10
REFINE_FACTOR = 8  # IVF-PQ: candidates per result re-ranked with the finer codes


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ConfigError("vislang index needs faiss: pip install 'vislang[search]'") from None
    return faiss


def choose_kind(n: int, dim: int, kind: str = "auto") -> str:
    """The index kind for ``n`` vectors of ``dim`` (``auto`` decides by size)."""
    if kind not in KINDS:
        raise ConfigError(f"index kind {kind!r}: choose one of {', '.join(KINDS)}")
    if kind != "auto":
        return kind
    if n <= EXACT_MAX:
        return "flat"
    return "hnsw" if n * dim * 4 <= HNSW_MAX_BYTES else "ivfpq"


def ivf_lists(n: int) -> int:
    """IVF's list count: about ``4 sqrt(n)``, at most one list per 39 training vectors (faiss's
    minimum for k-means to be meaningful), at least 1."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def pq_subquantizers(dim: int) -> int:
    """PQ's sub-vector count: the largest divisor of ``dim`` up to ``dim / 4`` (4-dimensional
    sub-vectors of 8-bit codes: 8x compression of float32) that faiss's PQ accepts."""
    for m in range(max(1, dim // 4), 0, -1):
        if dim % m == 0:
            return m
    return 1


def new_index(kind: str, vectors: np.ndarray, nlist: int | None, pq_m: int | None, hnsw_m: int | None):
    """An empty (trained where needed) faiss index of ``kind`` over inner product, taking ids."""
    faiss = _faiss()
    n, dim = vectors.shape
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), {}
    if kind == "hnsw":
        m = hnsw_m or 32
        graph = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = 80
        return faiss.IndexIDMap2(graph), {"hnsw_m": m}
    lists, m = nlist or ivf_lists(n), pq_m or pq_subquantizers(dim)
    if dim % m:
        raise ConfigError(f"--pq-m {m} must divide the embedding width {dim}")
    if n < lists * 39 and nlist:
        raise ConfigError(f"--nlist {lists} needs at least {lists * 39} vectors to train, the index has {n}")
    # PQ codes find candidates, 8-bit scalar codes re-rank them: PQ alone tops out below the
    # recall a search page needs, and the refinement keeps the index 4x smaller than the vectors
    inner = faiss.index_factory(dim, f"IVF{lists},PQ{m},Refine(SQ8)", faiss.METRIC_INNER_PRODUCT)
    inner.train(_training_sample(vectors, lists))
    faiss.downcast_index(inner).k_factor = REFINE_FACTOR
    return faiss.IndexIDMap2(inner), {"nlist": lists, "pq_m": m, "refine": "SQ8", "k_factor": REFINE_FACTOR}


def _training_sample(vectors: np.ndarray, lists: int) -> np.ndarray:
    """At most 256 vectors per list for k-means (more adds time, not accuracy), seeded."""
    cap = max(256 * lists, 10_000)
    if len(vectors) <= cap:
        return vectors
    rows = np.random.default_rng(0).choice(len(vectors), cap, replace=False)
    return vectors[np.sort(rows)]


def set_search_param(index: Any, kind: str, value: int | None) -> None:
    """Set ``efSearch`` (HNSW) or ``nprobe`` (IVF) on an opened index; flat has none."""
    if value is None or kind == "flat":
        return
    faiss = _faiss()
    if kind == "hnsw":
        faiss.downcast_index(index.index).hnsw.efSearch = int(value)
    else:
        _ivf(index).nprobe = int(value)


def _ivf(index: Any) -> Any:
    """The IVF layer inside IDMap2(Refine(IVF-PQ))."""
    faiss = _faiss()
    return faiss.extract_index_ivf(faiss.downcast_index(faiss.downcast_index(index.index).base_index))


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's true top-k ids that the approximate search returned."""
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k]) & set(t)) / k for f, t in zip(found, truth)]))


def _candidates(kind: str, index: Any) -> list[int]:
    if kind == "hnsw":
        return [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]
    lists = _ivf(index).nlist
    return sorted({p for p in [1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, lists] if p <= lists})


def _without(found: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """Each row's first ``k`` ids other than its own query's (padded with -1)."""
    rows = [[i for i in row if i != q][:k] for row, q in zip(found.tolist(), own.tolist())]
    return np.array([r + [-1] * (k - len(r)) for r in rows])


def tune(
    index: Any, kind: str, ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, query_ids: np.ndarray,
    target: float,
) -> dict:  # fmt: skip
    """The smallest search parameter whose recall@10 against an exact scan reaches ``target``
    (the largest tried if none does); the index is left set to it. Queries drawn from the
    collection itself find themselves for free, so each query's own id (``query_ids``, or -1
    for outside queries) is dropped from both lists before counting."""
    faiss = _faiss()
    k = min(TUNE_K, len(ids) - 1)
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    truth = _without(ids[exact.search(queries, k + 1)[1]], query_ids, k)
    name = "efSearch" if kind == "hnsw" else "nprobe"
    recall = 0.0
    for value in _candidates(kind, index):
        set_search_param(index, kind, value)
        recall = recall_at_k(_without(index.search(queries, k + 1)[1], query_ids, k), truth)
        if recall >= target:
            break
    return {name: value, "recall_at_10": round(recall, 4), "tune_queries": len(queries)}


def _queries(ids: np.ndarray, vectors: np.ndarray, others: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Tuning queries and their own ids: the other modality's embeddings where there are enough
    (what a search asks; own id -1), else the collection's own vectors."""
    rng = np.random.default_rng(1)
    outside = others is not None and len(others) >= TUNE_QUERIES
    pool = others if outside else vectors
    rows = np.sort(rng.choice(len(pool), min(TUNE_QUERIES, len(pool)), replace=False))
    own = np.full(len(rows), -1, np.int64) if outside else ids[rows]
    return np.ascontiguousarray(pool[rows], dtype=np.float32), own


def build_one(
    ids: np.ndarray,
    vectors: np.ndarray,
    path: Path,
    kind: str = "auto",
    target_recall: float = 0.95,
    queries: np.ndarray | None = None,
    nlist: int | None = None,
    pq_m: int | None = None,
    hnsw_m: int | None = None,
) -> dict:
    """Build, tune and write (atomically) one faiss index; what it is, for the manifest."""
    faiss = _faiss()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    chosen = choose_kind(len(ids), vectors.shape[1], kind)
    index, params = new_index(chosen, vectors, nlist, pq_m, hnsw_m)
    index.add_with_ids(vectors, ids.astype(np.int64))
    info: dict[str, Any] = {"kind": chosen, "count": int(len(ids)), "dim": int(vectors.shape[1]), **params}
    if chosen != "flat":
        info |= tune(index, chosen, ids, vectors, *_queries(ids, vectors, queries), target_recall)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        faiss.write_index(index, str(tmp))
        tmp.replace(path)
    except (OSError, RuntimeError) as error:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot write {path}: {first_line(error)}") from None
    return info | {"file": path.name}


def build_indexes(
    root: str | Path,
    kind: str = "auto",
    target_recall: float = 0.95,
    nlist: int | None = None,
    pq_m: int | None = None,
    hnsw_m: int | None = None,
) -> dict:
    """image.faiss over every part's image embeddings, and text.faiss over the captions' where
    any were indexed; ``{"image": info, "text": info}`` for the manifest's ``faiss`` entry."""
    root = Path(root)
    image_ids, images = embeddings(root, "image")
    if not len(image_ids):
        raise DataError(f"{root}: the index holds no embedded image (every sample skipped?)")
    text_ids, texts = embeddings(root, "text")
    options = {"kind": kind, "target_recall": target_recall, "nlist": nlist, "pq_m": pq_m, "hnsw_m": hnsw_m}
    out = {"image": build_one(image_ids, images, root / FAISS_FILES["image"], queries=texts, **options)}
    if len(text_ids):
        out["text"] = build_one(text_ids, texts, root / FAISS_FILES["text"], queries=images, **options)
    else:
        (root / FAISS_FILES["text"]).unlink(missing_ok=True)
    return out


def open_index(root: str | Path, info: dict) -> Any:
    """A written faiss index, with its tuned search parameter set."""
    faiss = _faiss()
    path = Path(root) / info["file"]
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as error:
        raise DataError(f"cannot read faiss index {path}: {first_line(error)}") from None
    set_search_param(index, info["kind"], info.get("efSearch", info.get("nprobe")))
    return index
