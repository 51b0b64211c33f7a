"""Recall@10 of `vislang index`'s approximate faiss indexes against exact search, and query
latency, on a collection of 100k embeddings.

The embeddings are clustered unit vectors (random centres, per-vector noise: the cluster
structure real CLIP embeddings have, without downloading any), written in the index layout and
indexed by the same `build_indexes` `vislang index` calls, so the kind, the IVF list count and
the tuned search parameter are what a user gets. Recall is measured on held-out queries from the
same distribution, which the tuning never saw, against a flat exact scan.

With --model (anything vislang.load opens, of the embeddings' width: the demo model's is 64),
the text-query latency of `SearchIndex.text_to_images` is also measured in-process: tokenising,
the text tower and the faiss search together, one query at a time.

    python bench/index_recall.py [--n 100000] [--dim 512] [--kinds hnsw ivfpq] [--model runs/demo --dim 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from _machine import cpu_line

from vislang.search import ann, layout
from vislang.search.searcher import SearchIndex

QUERIES = 1000
WORDS = ["red", "blue", "green", "circle", "square", "triangle", "star", "small", "large", "left", "right"]


def clustered(n: int, dim: int, seed: int, clusters: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    x = centres[rng.integers(clusters, size=n)] + 0.8 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_collection(root: Path, vectors: np.ndarray, part_size: int = 8192) -> None:
    for part in range(0, (len(vectors) + part_size - 1) // part_size):
        rows = list(range(part * part_size, min(len(vectors), (part + 1) * part_size)))
        layout.write_part(root, part, rows, [f"row-{i}" for i in rows], [None] * len(rows), vectors[rows], None,
                          [None] * len(rows), {})  # fmt: skip


def percentiles(seconds: list[float]) -> str:
    ms = np.asarray(seconds) * 1e3
    return f"p50 {np.percentile(ms, 50):.3f} ms, p99 {np.percentile(ms, 99):.3f} ms"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--kinds", nargs="+", default=["hnsw", "ivfpq"])
    p.add_argument("--model", help="measure SearchIndex text-query latency with this model")
    args = p.parse_args()
    print(f"CPU: {cpu_line()}; faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads")
    drawn = clustered(args.n + QUERIES, args.dim, seed=0)
    vectors, queries = drawn[: args.n], drawn[args.n :]
    exact = faiss.IndexFlatIP(args.dim)
    exact.add(vectors)
    truth = exact.search(queries, 10)[1]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_collection(root, vectors)
        for kind in args.kinds:
            start = time.perf_counter()
            info = ann.build_indexes(root, kind=kind)["image"]
            built = time.perf_counter() - start
            index = ann.open_index(root, info)
            recall = ann.recall_at_k(index.search(queries, 10)[1], truth)
            threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
            times = []
            for q in queries[:300]:
                t = time.perf_counter()
                index.search(q[None], 10)
                times.append(time.perf_counter() - t)
            faiss.omp_set_num_threads(threads)
            tuned = {k: info[k] for k in ("efSearch", "nprobe", "nlist", "pq_m", "hnsw_m") if k in info}
            print(f"{kind}: n {args.n}, dim {args.dim}, {tuned}, built in {built:.1f} s, recall@10 {recall:.4f} "
                  f"(tuning's own estimate {info.get('recall_at_10')}), faiss search 1 thread {percentiles(times)}")  # fmt: skip
            if args.model:
                layout.write_manifest(root, {"model": args.model, "part_size": 8192, "count": args.n,
                                             "faiss": {"image": info}})  # fmt: skip
                searcher = SearchIndex(root)
                rng = np.random.default_rng(0)
                texts = [" ".join(rng.choice(WORDS, 3)) for _ in range(300)]
                searcher.text_to_images(texts[0])  # loads the model
                times = []
                for text in texts:
                    t = time.perf_counter()
                    searcher.text_to_images(text, 10)
                    times.append(time.perf_counter() - t)
                print(f"{kind}: SearchIndex.text_to_images end to end (tokenise + text tower + search): "
                      f"{percentiles(times)}")  # fmt: skip


if __name__ == "__main__":
    main()
