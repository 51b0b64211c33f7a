"""Curation: MetaCLIP metadata, matching (worked cases and a property test against the naive
rule), balancing (exact probabilities and empirical keep rates), and the same kept ids on every
engine, process count and sharding."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vislang.curate import balance as bal
from vislang.curate.match import EntryMatcher, naive_match, spaced
from vislang.curate.metadata import build_metadata, load_metadata, wordnet_entries, write_metadata
from vislang.curate.pipeline import balance_file, balance_pool, kept_ids, match_pool
from vislang.errors import DataError

pytest.importorskip("ahocorasick")


def test_matching_worked_cases():
    entries = ["A", "a", "hot dog", "dog", "T-shirt", "shirt", "cats"]
    match = EntryMatcher(entries)
    names = lambda text: [entries[i] for i in match(text)]  # noqa: E731
    assert names("A hot dog.") == ["A", "hot dog", "dog"]
    assert names("dogs, cats") == ["cats"]
    assert names("Adult T-shirt") == ["T-shirt"]
    assert spaced("a,b\tc") == " a , b c "
    with pytest.raises(DataError, match="twice"):
        EntryMatcher(["dog", "cat", "dog"])


def test_matching_equals_the_naive_rule_on_random_texts():
    rng = random.Random(0)
    words = ["dog", "Dog", "hot", "cat", "T-shirt", "shirt", "New", "York", "a", "U.S.", "x`y", "0", "42", "é"]
    glue = [" ", "  ", ", ", ". ", "; ", ":", "?", "!", "\t", "\n", "\r", "`", "-", ""]
    entries = sorted({" ".join(rng.choice(words) for _ in range(rng.randint(1, 3))) for _ in range(60)})
    entries += ["dog,", "hot  dog", ".", "York?"]  # entries with the spaced characters never match
    match = EntryMatcher(entries)
    for _ in range(3000):
        text = "".join(rng.choice(words) + rng.choice(glue) for _ in range(rng.randint(0, 8)))
        assert match(text) == naive_match(text, entries), text


def test_balancing_probabilities_and_keep_rates(tmp_path):
    counts = np.array([10, 40000, 100000])
    probs = bal.entry_probabilities(counts, 20000)
    assert probs.tolist() == [1.0, 0.5, 0.2]
    keep = bal.keep_probabilities(np.array([0, 0, 1, 2]), np.array([1, 2, 0, 2]), 3, probs)
    assert keep == pytest.approx([0.6, 1.0, 0.2])

    n = 100_000  # empirical keep rates of texts matching {1, 2}, {0} and {2}
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept_counts").mkdir()
    groups = [[1, 2]] * n + [[0]] * n + [[2]] * n
    table = pa.table({"uid": [f"u{i}" for i in range(3 * n)], "text_index": [0] * (3 * n),
                      "n_texts": [1] * (3 * n), "entries": pa.array(groups, pa.list_(pa.int32()))})  # fmt: skip
    pq.write_table(table, tmp_path / "m.parquet")
    np.save(tmp_path / "counts.npy", counts)
    balance_file(str(tmp_path / "m.parquet"), str(tmp_path / "counts.npy"), str(tmp_path), 20000, 7, False)
    kept = set(pq.read_table(tmp_path / "kept" / "m.parquet").column("uid").to_pylist())
    for start, expected in ((0, 0.6), (n, 1.0), (2 * n, 0.2)):
        rate = sum(f"u{i}" in kept for i in range(start, start + n)) / n
        assert abs(rate - expected) <= 4 * np.sqrt(expected * (1 - expected) / n) + 1e-9, (start, rate)


def test_threshold_from_the_tail_share():
    counts = np.array([0, 1, 2, 3, 4, 90])  # 100 matches
    assert bal.tail_share(counts, 4) == pytest.approx(0.06)
    assert bal.threshold_for_tail_share(counts, 0.06) == 4
    assert bal.threshold_for_tail_share(counts, 0.05) == 4
    assert bal.threshold_for_tail_share(counts, 0.07) == 5
    assert bal.threshold_for_tail_share(counts, 1.0) == 91
    draws = bal.unit_draws(3, ["a", "b", "a"])
    assert draws[0] == draws[2] != draws[1] and 0 <= draws.min() < 1
    assert not np.array_equal(bal.unit_draws(4, ["a"]), draws[:1])


WORDNET_NOUN = """  1 This software and database is being provided to you, the LICENSEE, by
  2 Princeton University under the following license.
00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which exists
02084071 05 n 05 dog 0 domestic_dog 0 Canis_familiaris 0 @ 02083346 n 0000 | a member of the genus Canis
07697537 13 n 02 hotdog 0 hot_dog 0 001 @ 07697100 n 0000 | a frankfurter served hot on a bun
09119141 15 n 02 St._Louis 0 Saint_Louis 0 | a city in Missouri
"""
WORDNET_ADJ = """  1 license line
00001740 00 a 01 able(p) 0 005 = 05207437 n 0000 | (usually followed by `to')
"""


def test_metadata_from_wordnet_and_lists(tmp_path):
    wordnet = tmp_path / "wordnet"
    wordnet.mkdir()
    (wordnet / "data.noun").write_text(WORDNET_NOUN)
    (wordnet / "data.adj").write_text(WORDNET_ADJ)
    assert wordnet_entries(wordnet) == {"entity", "dog", "hotdog", "st", "able"}
    (tmp_path / "unigrams.txt").write_text("zebra\n\n  dog \nNew York\n")
    (tmp_path / "titles.txt").write_text("Eiffel Tower\nzebra\n")
    a = build_metadata(wordnet, [tmp_path / "unigrams.txt", tmp_path / "titles.txt"])
    b = build_metadata(wordnet, [tmp_path / "titles.txt", tmp_path / "unigrams.txt"])
    assert a == b == sorted(a) and len(a) == len(set(a))
    assert {"0", "99", "New York", "Eiffel Tower", "dog", "st"} <= set(a) and "100" not in a
    write_metadata(a, tmp_path / "metadata.json")
    assert load_metadata(tmp_path / "metadata.json") == a
    with pytest.raises(DataError, match="wordnet-base"):
        wordnet_entries(tmp_path / "nowhere")


# -- a small pool in every file format ------------------------------------------------------------

VOCAB = ["dog", "cat", "hot dog", "red", "car", "New York", "tree", "T-shirt", "shirt", "sky", "sea"]


def _caption(rng: random.Random) -> str:
    return " ".join(rng.choice(VOCAB + ["a", "the", "of", "photo"]) for _ in range(rng.randint(1, 7))) + rng.choice(
        ["", ".", "!", ", nice"]
    )


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def pool(tmp_path):
    rng = random.Random(1)
    folder = tmp_path / "pool"
    folder.mkdir()
    rows = [{"uid": f"p{i}", "caption": _caption(rng), "alt": _caption(rng)} for i in range(400)]
    pq.write_table(pa.Table.from_pylist(rows), folder / "a.parquet")
    with (folder / "b.jsonl").open("w") as f:
        for i in range(300):
            f.write(
                json.dumps({"uid": f"j{i}", "caption": _caption(rng), "alt": [_caption(rng), _caption(rng)]}) + "\n"
            )
    with tarfile.open(folder / "c.tar", "w") as tar:
        for i in range(200):
            _tar_member(tar, f"{i:06d}.jpg", b"not read")
            _tar_member(tar, f"{i:06d}.txt", _caption(rng).encode())
            _tar_member(tar, f"{i:06d}.json", json.dumps({"caption": "ignored beside the .txt"}).encode())
    write_metadata(VOCAB, tmp_path / "metadata.json")
    return tmp_path


def _run(pool, name: str, engine: str, processes: int, one_text: bool = False):
    out = pool / name
    summary = match_pool([str(pool / "pool")], pool / "metadata.json", out / "matched",
                         text_columns=("caption", "alt"), engine=engine, processes=processes)  # fmt: skip
    balanced = balance_pool(out / "matched", out / "balanced", t=30, seed=5, one_text_per_image=one_text,
                            engine=engine, processes=processes)  # fmt: skip
    return summary, balanced, kept_ids(out / "balanced"), np.load(out / "matched" / "entry_counts.npy")


def test_pool_matches_and_balances_the_same_with_any_process_count(pool):
    one, balanced, kept, counts = _run(pool, "p1", "local", 1)
    assert one["images"] == 900 and one["texts"] == 400 * 2 + 300 * 3 + 200
    entries = load_metadata(pool / "metadata.json")
    table = pq.read_table(pool / "p1" / "matched" / "matches" / "c.parquet")
    assert table.num_rows and table.column("uid").to_pylist()[0] == "000000"
    expected = np.zeros(len(entries), dtype=np.int64)  # the counts equal the naive rule's
    for f in ("a", "b", "c"):
        for ids in pq.read_table(pool / "p1" / "matched" / "matches" / f"{f}.parquet").column("entries").to_pylist():
            expected[ids] += 1
    assert np.array_equal(counts, expected)
    assert balanced["largest_entry_after"] < balanced["largest_entry_before"]
    assert (pool / "p1" / "balanced" / "entry_counts.png").stat().st_size > 1000
    _, _, kept2, counts2 = _run(pool, "p2", "local", 2)
    assert kept2 == kept and np.array_equal(counts2, counts)
    _, _, one_text, _ = _run(pool, "p3", "local", 2, one_text=True)
    uids = [uid for uid, _ in one_text]
    assert len(uids) == len(set(uids)) and set(one_text) != set(kept)


def test_ray_engine_gives_the_same_kept_ids(pool):
    pytest.importorskip("ray")
    _, _, local, counts = _run(pool, "local", "local", 1)
    _, _, ray_kept, ray_counts = _run(pool, "ray", "ray", 2)
    assert ray_kept == local and np.array_equal(ray_counts, counts)


def test_curate_commands(pool):
    cli = [sys.executable, "-m", "vislang.cli", "curate"]
    run = subprocess.run([*cli, "match", str(pool / "pool"), "--metadata", str(pool / "metadata.json"),
                          "--out", str(pool / "m"), "--text-columns", "caption,alt"], capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    run = subprocess.run([*cli, "balance", str(pool / "m"), "--out", str(pool / "b"), "--tail-share", "0.5"],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "tail share" in run.stdout and json.loads((pool / "b" / "balance.json").read_text())["kept_texts"] > 0
    bad = subprocess.run([*cli, "match", str(pool / "nope.parquet"), "--metadata", str(pool / "metadata.json"),
                          "--out", str(pool / "x")], capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "nope.parquet" in bad.stderr and "Traceback" not in bad.stderr


def test_stages_chain_into_a_training_set(tmp_path):
    """match -> balance, dedup, then export: the shards hold exactly the samples both kept."""
    pytest.importorskip("imagehash")
    from PIL import Image

    from vislang.curate.dedup import dedup_pool
    from vislang.curate.export import export_subset
    from vislang.data.make_shards import write_shards
    from vislang.data.world import World

    world = World(48, seed=3)
    records = []
    for i in range(120):
        image, caption, _ = world.sample("train", i % 100)  # samples 100-119 repeat 0-19
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "PNG")
        records.append((f"{i:05d}", buffer.getvalue(), "png", [caption], {"uid": f"{i:032x}"}))
    write_shards(records, tmp_path / "pool", 50)
    shards = str(tmp_path / "pool" / "{00000..00002}.tar")
    write_metadata(["circle", "square", "triangle", "red", "blue", "green", "small", "large"], tmp_path / "m.json")
    match_pool([shards], tmp_path / "m.json", tmp_path / "matched")
    balance_pool(tmp_path / "matched", tmp_path / "balanced", t=20, seed=0)
    dedup_pool([shards], tmp_path / "dedup", "sha256")
    balanced = {uid for uid, _ in kept_ids(tmp_path / "balanced")}
    table = pq.read_table(tmp_path / "dedup" / "dedup.parquet").to_pydict()
    unique = {uid for uid, keep in zip(table["uid"], table["keep"]) if keep}
    assert len(unique) == 100 and all(len(u) == 32 for u in balanced)
    sizes = export_subset([shards], [str(tmp_path / "balanced"), str(tmp_path / "dedup")], tmp_path / "curated", 40)
    assert sum(sizes.values()) == len(balanced & unique) > 0
    with tarfile.open(tmp_path / "curated" / "00000.tar") as tar:
        meta = json.loads(tar.extractfile(next(m for m in tar if m.name.endswith(".json"))).read())
    assert meta["uid"] in balanced & unique
