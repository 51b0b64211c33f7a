"""The faiss indexes of `vislang index`: the kind chosen by size, exact search equal to a numpy
scan, approximate search tuned to its recall target (checked against numpy, not faiss), ids
kept, and parts read back exactly."""

from __future__ import annotations

import numpy as np
import pytest

from vislang.errors import ConfigError, DataError
from vislang.search import ann, layout


def clustered(n: int, dim: int, seed: int = 0, clusters: int = 64) -> np.ndarray:
    """Unit vectors around random centres: the cluster structure real embeddings have."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = centres[rng.integers(clusters, size=n)] + 0.6 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def numpy_top(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ vectors.T
    return ids[np.argsort(-scores, axis=1, kind="stable")[:, :k]]


def test_the_kind_follows_the_size_and_flags_override_it():
    assert ann.choose_kind(1_000, 512) == "flat"
    assert ann.choose_kind(ann.EXACT_MAX + 1, 512) == "hnsw"
    assert ann.choose_kind(10_000_000, 512) == "ivfpq"  # 20 GB of raw vectors
    assert ann.choose_kind(10, 8, "ivfpq") == "ivfpq"
    with pytest.raises(ConfigError, match="choose one of"):
        ann.choose_kind(10, 8, "annoy")
    assert ann.ivf_lists(100_000) == int(4 * 100_000**0.5) and ann.ivf_lists(50) == 1
    assert ann.pq_subquantizers(512) == 128 and 48 % ann.pq_subquantizers(48) == 0


def test_recall_at_k_on_a_hand_made_case():
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 9, 1], [5, 0, 0, 0]])
    assert ann.recall_at_k(found, truth) == pytest.approx((3 / 4 + 1 / 4) / 2)


def test_flat_search_is_a_numpy_scan_with_the_ids_kept(tmp_path):
    vectors = clustered(700, 24)
    ids = np.arange(700, dtype=np.int64) * 3 + 11  # ids are not row numbers
    info = ann.build_one(ids, vectors, tmp_path / "image.faiss", kind="flat")
    assert info["kind"] == "flat" and info["count"] == 700
    index = ann.open_index(tmp_path, info)
    queries = clustered(20, 24, seed=5)  # other centres: far from everything, still exact
    scores, found = index.search(queries, 10)
    assert np.array_equal(found, numpy_top(vectors, ids, queries, 10))
    assert np.allclose(scores[:, 0], np.max(queries @ vectors.T, axis=1), atol=1e-5)


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_approximate_search_is_tuned_to_its_recall_target(tmp_path, kind):
    drawn = clustered(6200, 32)  # the last 200: queries from the same distribution, not indexed
    vectors, queries, ids = drawn[:6000], drawn[6000:], np.arange(6000, dtype=np.int64)
    info = ann.build_one(ids, vectors, tmp_path / "image.faiss", kind=kind, target_recall=0.9)
    parameter = "efSearch" if kind == "hnsw" else "nprobe"
    assert info["kind"] == kind and parameter in info and info["recall_at_10"] >= 0.9
    # measured again on queries the tuning never saw, against numpy
    index = ann.open_index(tmp_path, info)
    recall = ann.recall_at_k(index.search(queries, 10)[1], numpy_top(vectors, ids, queries, 10))
    assert recall >= 0.85, (info, recall)


def test_parts_read_back_exactly_and_captionless_rows_have_no_text_embedding(tmp_path):
    rng = np.random.default_rng(0)
    images, texts = rng.normal(size=(5, 8)).astype(np.float32), rng.normal(size=(5, 8)).astype(np.float32)
    captions = ["a", None, "c", None, "e"]
    layout.write_part(tmp_path, 0, [0, 1, 2, 3, 4], list("vwxyz"), captions, images[:5], texts, [None] * 5, {})
    layout.write_part(tmp_path, 2, [10], ["q"], [None], images[:1], None, [b"jpg"], {"bad_image": 2})
    assert layout.done_parts(tmp_path) == {0, 2}
    assert layout.part_skipped(tmp_path, 2) == {"bad_image": 2}
    ids, got = layout.embeddings(tmp_path, "image")
    assert ids.tolist() == [0, 1, 2, 3, 4, 10] and np.array_equal(got, np.concatenate([images, images[:1]]))
    ids, got = layout.embeddings(tmp_path, "text")
    assert ids.tolist() == [0, 2, 4] and np.array_equal(got, texts[[0, 2, 4]])
    info = ann.build_indexes(tmp_path)
    assert set(info) == {"image", "text"} and info["text"]["count"] == 3


def test_an_index_of_nothing_or_no_index_is_one_line(tmp_path):
    with pytest.raises(DataError, match="no embedded image"):
        ann.build_indexes(tmp_path)
    with pytest.raises(DataError, match="not a vislang index") as refused:
        layout.read_manifest(tmp_path)
    assert "\n" not in str(refused.value)
