"""DataComp-style filters: the basic rules, the CLIP-score fraction threshold, first-synset text
filtering against a WordNet index, k-means image clusters, intersections and the subset files;
filters by name with their own validated options, a filter registered from this file, and
``--filters FILE.yaml``."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pydantic import Field

from vislang.cli import main
from vislang.curate.filters import (
    FILTERS,
    FilterConfig,
    FilterContext,
    Sample,
    WordNetNouns,
    basic_rules,
    filter_pool,
    fraction_threshold,
    image_cluster_keep,
    write_subset,
)
from vislang.errors import ConfigError

pytest.importorskip("py3langid")
pytest.importorskip("faiss")

INDEX_NOUN = """  1 This software and database is being provided to you, the LICENSEE, by
dog n 7 5 @ ~ #m #p %p 7 1 02084071 10114209 10023039 09886220 07676602 03907626 02710044
puppy n 2 2 @ ~ 2 0 02085374 10498816
mouse n 4 4 @ ~ #p %p 4 1 02330245 10344443 09416076 03793489
beach n 1 3 @ #p %p 1 0 09217230
"""
NOUN_EXC = "mice mouse\nfeet foot\n"


@pytest.fixture
def wordnet(tmp_path):
    folder = tmp_path / "wordnet"
    folder.mkdir()
    (folder / "index.noun").write_text(INDEX_NOUN)
    (folder / "noun.exc").write_text(NOUN_EXC)
    return folder


def test_basic_rules():
    assert basic_rules("a dog on the beach", 300, 200, "en")
    assert not basic_rules("ein Hund am Strand", 300, 200, "de")
    assert not basic_rules("a dog", 300, 200, "en")  # two words
    assert not basic_rules("a b c", 300, 200, "en")  # five characters
    assert not basic_rules("a dog on the beach", 300, 150, "en")  # shorter side < 200
    assert basic_rules("a dog on the beach", 600, 200, "en") and not basic_rules("a dog on the beach", 700, 200, "en")


def test_fraction_threshold_is_the_score_at_floor_n_fraction():
    scores = np.array([0.1, 0.5, 0.3, 0.9, 0.7])
    assert fraction_threshold(scores, 0.4) == 0.5  # descending [0.9, 0.7, 0.5, ...], index 2
    assert fraction_threshold(scores, 1.0) == 0.1
    with pytest.raises(ConfigError):
        fraction_threshold(scores, 0.0)


def test_first_noun_synset_of_caption_words(wordnet):
    nouns = WordNetNouns(wordnet)
    assert nouns.synset("Dog") == "n02084071" and nouns.synset("dogs") == "n02084071"
    assert nouns.synset("puppies") == "n02085374" and nouns.synset("mice") == "n02330245"
    assert nouns.synset("cat") is None
    assert nouns.any_in("Two puppies on a beach!", {"n02085374"})
    assert not nouns.any_in("a hot dogma", {"n02084071"})


def test_image_clusters_keep_what_is_near_the_target():
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:3] * 5
    pool = np.concatenate([c + rng.normal(0, 0.3, (50, 8)) for c in centres])
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    target = centres[:1] + rng.normal(0, 0.3, (5, 8))
    keep = image_cluster_keep(pool, target / np.linalg.norm(target, axis=1, keepdims=True), 3)
    assert keep[:50].all() and not keep[50:].any()


def test_subset_files(tmp_path):
    uids = ["ffffffffffffffff0000000000000001", "00000000000000010000000000000002"]
    assert write_subset(uids, tmp_path) == ["subset.txt", "subset.npy"]
    subset = np.load(tmp_path / "subset.npy")
    assert subset.dtype == np.dtype("u8,u8") and subset.tolist() == [(1, 2), (2**64 - 1, 1)]
    assert (tmp_path / "subset.txt").read_text().splitlines() == sorted(uids)
    assert write_subset(["a", "b"], tmp_path / ".") == ["subset.txt"]


def _png(width: int, height: int, seed: int) -> bytes:
    array = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def pool(tmp_path):
    rows = [
        ("0" * 31 + "1", "a dog sleeping on the beach", _png(300, 220, 0)),
        ("0" * 31 + "2", "ein kleiner Hund schläft am Strand", _png(300, 220, 1)),
        ("0" * 31 + "3", "two puppies playing in the garden", _png(250, 120, 2)),  # too small
        ("0" * 31 + "4", "a photo of a small grey mouse", _png(400, 300, 3)),
        ("0" * 31 + "5", "the view from the top of the mountain", _png(640, 480, 4)),
        ("0" * 31 + "6", "broken image bytes here", b"not an image"),
    ]
    table = pa.table({"uid": [r[0] for r in rows], "caption": [r[1] for r in rows], "image": [r[2] for r in rows]})
    pq.write_table(table, tmp_path / "pool.parquet")
    return tmp_path


def test_filter_pool_intersects_filters(pool, wordnet, tmp_path, tiny_config):
    basic = filter_pool([str(pool / "pool.parquet")], pool / "basic", {"basic": {}})
    assert basic["samples"] == 5 and basic["skipped_unreadable"] == 1
    assert (pool / "basic" / "subset.txt").read_text().split() == ["0" * 31 + i for i in "145"]
    (pool / "wnids.txt").write_text("n02084071\nn02330245\nn02085374\n")
    text = {"synsets": str(pool / "wnids.txt"), "wordnet": str(wordnet)}
    both = filter_pool([str(pool / "pool.parquet")], pool / "both", {"text": text, "basic": None})
    assert both["passed"] == {"basic": 3, "text_synsets": 3} and both["kept"] == 2  # dog and mouse
    assert np.load(pool / "both" / "subset.npy").tolist() == [(0, 1), (0, 4)]

    from conftest import export_untrained

    model = export_untrained(tiny_config, ["a dog on the beach", "a mouse"] * 50, tmp_path / "model")
    scored = filter_pool([str(pool / "pool.parquet")], pool / "clip", {"clip_score": {"fraction": 0.4}}, model)
    assert scored["kept"] == 3  # the scores at indices 0, 1, 2 of the descending sort (no ties)
    assert list(scored["passed"]) == ["clip_score", "clip_score_threshold"]
    assert isinstance(scored["passed"]["clip_score_threshold"], float)
    with pytest.raises(ConfigError, match="checkpoint"):
        filter_pool([str(pool / "pool.parquet")], pool / "x", {"clip_score": {"fraction": 0.4}})
    image = {"target": str(pool / "pool.parquet"), "clusters": 2}  # a bare string is one target
    near = filter_pool([str(pool / "pool.parquet")], pool / "image", {"image": image}, model)
    assert near["passed"] == {"image_clusters": 5}  # the target is the pool: every cluster is some target's nearest


def test_a_file_without_readable_samples_joins_the_others(pool):
    pq.write_table(
        pa.table({"uid": ["x"], "caption": ["a dog on the beach"], "image": [b"broken"]}), pool / "e.parquet"
    )
    summary = filter_pool([str(pool / "e.parquet"), str(pool / "pool.parquet")], pool / "e", {"basic": {}})
    assert summary["samples"] == 5 and summary["skipped_unreadable"] == 2 and summary["kept"] == 3


def test_filter_command(pool):
    cli = [sys.executable, "-m", "vislang.cli", "curate", "filter", str(pool / "pool.parquet"), "--out"]
    run = subprocess.run([*cli, str(pool / "c"), "--basic"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "kept 3" in run.stdout and (pool / "c" / "subset.npy").is_file()
    bad = subprocess.run([*cli, str(pool / "d")], capture_output=True, text=True)
    assert bad.returncode == 2 and "choose at least one filter" in bad.stderr and "Traceback" not in bad.stderr


BAD_OPTIONS = [
    ("basic", {"lang": "en"}, "filter basic: unknown config key 'lang'"),
    ("clip_score", {"threshold": 0.2, "fraction": 0.3}, "filter clip_score: threshold and fraction exclude each other"),
    ("clip_score", {}, "filter clip_score: give threshold or fraction"),
    ("clip_score", {"fraction": 1.5}, "filter clip_score: fraction: "),
    ("clip_score", {"fraction": 0}, "filter clip_score: fraction: "),
    ("text", {"synsets": "{tmp}/missing.txt"}, "filter text: synsets: cannot read"),
    ("text", {"synsets": "{tmp}/wnids.txt", "wordnet": "{tmp}"}, "filter text: wordnet: no index.noun"),
    ("text", {"synsets": "{tmp}/bad_wnids.txt", "wordnet": "{tmp}/wordnet"}, "filter text: synsets: "),
    ("text", {"wordnet": "{tmp}/wordnet"}, "filter text: synsets: Field required"),
    ("image", {"target": ["{tmp}/pool.parquet"], "clusters": 0}, "filter image: clusters: "),
    ("image", {"target": ["{tmp}/pool.parquet"]}, "filter image: clusters: Field required"),
    ("image", {"target": ["{tmp}/nowhere"], "clusters": 3}, "filter image: target: not found"),
    ("image", {"target": ["{tmp}/pool.parquet"], "clusters": 3, "k": 3}, "filter image: unknown config key 'k'"),
]


@pytest.mark.parametrize(("name", "options", "message"), BAD_OPTIONS)
def test_bad_filter_options_are_one_line_naming_the_filter_and_field(pool, wordnet, name, options, message):
    (pool / "wnids.txt").write_text("n02084071\n")
    (pool / "bad_wnids.txt").write_text("n02084071\ndog\n")
    options = {k: json.loads(json.dumps(v).replace("{tmp}", str(pool))) for k, v in options.items()}
    with pytest.raises(ConfigError) as error:
        filter_pool([str(pool / "pool.parquet")], pool / "out", {name: options}, checkpoint="unused")
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    assert not (pool / "out").exists()  # refused before any work


def test_unknown_and_missing_filters_are_refused(pool):
    with pytest.raises(ConfigError, match="unknown filter 'clip'; choose from basic, clip_score, text, image"):
        filter_pool([str(pool / "pool.parquet")], pool / "out", {"clip": {}})
    with pytest.raises(ConfigError, match="choose at least one filter"):
        filter_pool([str(pool / "pool.parquet")], pool / "out", {})
    with pytest.raises(ConfigError, match="filter clip_score: options must be a mapping"):
        filter_pool([str(pool / "pool.parquet")], pool / "out", {"clip_score": 0.3})


class WordFilter(FilterConfig):
    """A toy filter for the test below: captions containing a word (its own option)."""

    features = frozenset({"caption"})
    word: str = Field(min_length=1, description="the word a kept caption contains")

    def per_sample(self):
        return lambda sample: self.word in sample.caption.lower().split()

    def keep(self, table: dict[str, np.ndarray], context: FilterContext) -> np.ndarray:
        assert len(table["caption"]) == len(table["per_sample"])  # the declared feature reaches keep()
        return table["per_sample"]


def test_a_registered_filter_runs_alongside_basic(pool, monkeypatch):
    monkeypatch.setitem(FILTERS, "word", WordFilter)
    table = pq.read_table(pool / "pool.parquet")
    pq.write_table(table.slice(0, 3), pool / "a.parquet")  # two files: the worker pass forks two processes
    pq.write_table(table.slice(3), pool / "b.parquet")
    files = [str(pool / "a.parquet"), str(pool / "b.parquet")]
    summary = filter_pool(files, pool / "word", {"word": {"word": "the"}, "basic": {}}, processes=2)
    assert summary["passed"] == {"basic": 3, "word": 3} and summary["kept"] == 2
    assert (pool / "word" / "subset.txt").read_text().split() == ["0" * 31 + "1", "0" * 31 + "5"]
    assert WordFilter(word="dog").per_sample()(Sample("u", "A dog", 1, 1, b""))
    with pytest.raises(ConfigError, match="^filter word: word: "):
        filter_pool(files, pool / "x", {"word": {"word": ""}})


def test_filters_file_gives_the_flags_subset(pool, wordnet, capsys):
    (pool / "wnids.txt").write_text("n02084071\nn02330245\n")
    cli = ["curate", "filter", str(pool / "pool.parquet"), "--out"]
    assert (
        main([*cli, str(pool / "flags"), "--basic", "--synsets", str(pool / "wnids.txt"), "--wordnet", str(wordnet)])
        == 0
    )
    (pool / "filters.yaml").write_text(f"text: {{synsets: {pool / 'wnids.txt'}, wordnet: {wordnet}}}\nbasic: {{}}\n")
    assert main([*cli, str(pool / "file"), "--filters", str(pool / "filters.yaml")]) == 0
    flags, file = capsys.readouterr().out.splitlines()
    assert flags.replace("flags", "file") == file and "passed: basic 3, text_synsets 2; kept 2" in file
    assert (pool / "file" / "subset.txt").read_text() == (pool / "flags" / "subset.txt").read_text()
    assert json.loads((pool / "file" / "filter.json").read_text()) == json.loads(
        (pool / "flags" / "filter.json").read_text()
    )

    (pool / "twice.yaml").write_text("basic: {}\nclip_score: {fraction: 0.3}\nbasic: {}\n")
    assert main([*cli, str(pool / "x"), "--filters", str(pool / "twice.yaml")]) == 2
    assert "duplicate key 'basic' (line 3, column 1)" in capsys.readouterr().err
    (pool / "bad.yaml").write_text("clip_score: {fraction: 0.3, threshold: 0.2}\n")
    assert main([*cli, str(pool / "x"), "--filters", str(pool / "bad.yaml"), "--checkpoint", "m"]) == 2
    err = capsys.readouterr().err
    assert err == "vislang: error: filter clip_score: threshold and fraction exclude each other\n"
    assert main([*cli, str(pool / "x"), "--filters", str(pool / "bad.yaml"), "--basic"]) == 2
    assert "give one or the other" in capsys.readouterr().err
