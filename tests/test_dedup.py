"""Deduplication on generated photographs-like images with injected near-duplicates: the
perceptual hash at its default threshold finds resizes and re-encodes (recall >= 0.95) with
<= 1% false positives; exact copies by sha256; removal near an evaluation set; the embedding
method's mechanics; the command line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from vislang.curate.dedup import DEFAULT_THRESHOLD, components, dedup_pool, duplicate_pairs, phash
from vislang.data.photos import encode, near_copies, photo
from vislang.errors import ConfigError

pytest.importorskip("imagehash")
pytest.importorskip("faiss")


def test_perceptual_hash_finds_resizes_and_reencodes_with_few_false_positives():
    rng = np.random.default_rng(0)
    bases = [photo(rng) for _ in range(150)]
    hashes = np.stack([phash(encode(b)) for b in bases])
    threshold = DEFAULT_THRESHOLD["phash"]
    false = duplicate_pairs(hashes, None, "phash", threshold)
    n_negative = len(bases) * (len(bases) - 1) // 2
    assert len(false) / n_negative <= 0.01
    found = total = 0
    for i, base in enumerate(bases):
        copies = np.stack([phash(data) for data in near_copies(base).values()])
        pairs = duplicate_pairs(copies, hashes, "phash", threshold)
        found += sum(1 for c in range(len(copies)) if i in pairs[pairs[:, 0] == c, 1])
        total += len(copies)
    assert found / total >= 0.95


def test_components_group_transitively():
    groups = components(6, np.array([[0, 3], [3, 5], [1, 2]]))
    assert groups.tolist() == [0, 1, 1, 0, 4, 0]


@pytest.fixture
def pool(tmp_path):
    rng = np.random.default_rng(1)
    folder, evaluation = tmp_path / "pool", tmp_path / "eval"
    folder.mkdir()
    evaluation.mkdir()
    bases = [photo(rng) for _ in range(30)]
    for i, base in enumerate(bases):
        (folder / f"b{i:03d}.png").write_bytes(encode(base))
    for i in range(8):  # near copies of bases 0-7, an exact copy of bases 8-10
        for name, data in near_copies(bases[i]).items():
            (folder / f"v{i:03d}_{name}.{'jpg' if 'jpeg' in name else 'png'}").write_bytes(data)
    for i in range(8, 11):
        (folder / f"x{i:03d}.png").write_bytes(encode(bases[i]))
    (folder / "broken.png").write_bytes(b"\x89PNG not an image")
    for i in (20, 21):  # the evaluation set holds re-encodes of bases 20 and 21
        (evaluation / f"e{i}.jpg").write_bytes(encode(bases[i], "JPEG", quality=60))
    return tmp_path


def test_dedup_pool_keeps_one_per_group_and_drops_images_near_the_evaluation_set(pool):
    summary = dedup_pool([str(pool / "pool")], pool / "out", "phash", against=[str(pool / "eval")])
    table = pq.read_table(pool / "out" / "dedup.parquet").to_pylist()
    kept = sorted(row["uid"] for row in table if row["keep"])
    assert kept == [f"b{i:03d}.png" for i in range(30) if i not in (20, 21)]
    assert summary["removed_duplicates"] == 8 * 4 + 3 and summary["duplicate_groups"] == 11
    assert summary["removed_near_eval"] == 2 and summary["skipped_unreadable"] == 1
    exact = dedup_pool([str(pool / "pool")], pool / "exact", "sha256")
    assert exact["removed_duplicates"] == 3  # byte-identical copies only


def test_embedding_dedup_needs_a_model_and_its_threshold(pool, tmp_path, tiny_config):
    with pytest.raises(ConfigError, match="checkpoint"):
        dedup_pool([str(pool / "pool")], pool / "e", "embedding", threshold=0.9)
    from conftest import export_untrained

    model_dir = export_untrained(tiny_config, ["a red circle", "a blue square"] * 50, tmp_path / "model")
    with pytest.raises(ConfigError, match="threshold"):
        dedup_pool([str(pool / "pool")], pool / "e", "embedding", checkpoint=str(model_dir))
    summary = dedup_pool([str(pool / "pool")], pool / "e", "embedding", threshold=0.9999, checkpoint=str(model_dir))
    rows = {r["uid"]: r for r in pq.read_table(pool / "e" / "dedup.parquet").to_pylist()}
    assert all(rows[f"x{i:03d}.png"]["duplicate"] for i in range(8, 11))  # identical images, cosine 1
    assert summary["kept"] <= summary["images"] - 3


def test_dedup_command(pool):
    cli = [sys.executable, "-m", "vislang.cli", "curate", "dedup", str(pool / "pool")]
    run = subprocess.run([*cli, "--out", str(pool / "c")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "35 duplicates in 11 groups" in run.stdout
    bad = subprocess.run([*cli, "--out", str(pool / "d"), "--method", "embedding"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--checkpoint" in bad.stderr and "Traceback" not in bad.stderr
