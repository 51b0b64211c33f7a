"""GIST's three stages through the command line on a tiny untrained model: each file is valid
and read by the next, a rerun is byte-identical, and matches stay within the image's class."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import torch

from conftest import TINY, export_untrained
from vislang.adapt.gist import clean_caption, summary_request, top_matches
from vislang.experiment import build_config


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vislang.cli", *args], capture_output=True, text=True, timeout=300)


def test_top_matches_by_hand():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    own = torch.tensor([[0.6, 0.8], [1.0, 0.0], [0.0, 1.0]])
    order, scores = top_matches(images, own, 2)
    assert order.tolist() == [[1, 0], [2, 0]]
    assert torch.allclose(scores, torch.tensor([[1.0, 0.6], [1.0, 0.8]]))


def test_summary_request_names_the_class_first():
    request = summary_request("star", ["A star has five points.", "A star has curved edges."])
    assert request.kind == "summary" and request.text.index("star") < request.text.index("five")
    assert clean_caption('\n "a star, five points." \nmore') == "a star, five points."


def test_stages_end_to_end(tmp_path):
    texts = ["a red circle", "a blue square", "a green triangle", "a photo of a star", "four corners"] * 10
    model = export_untrained(build_config({}, TINY), texts, tmp_path / "model")
    fine, matched, pairs = tmp_path / "fine.json", tmp_path / "matched.parquet", tmp_path / "pairs.parquet"
    assert cli("gist", "describe", "world:shape", "--out", str(fine)).returncode == 0
    descriptions = json.loads(fine.read_text())
    assert set(descriptions) == {"circle", "square", "triangle", "diamond", "cross", "star"}
    assert all(text.startswith("A triangle") for text in descriptions["triangle"])
    match = (
        "gist",
        "match",
        model,
        "--descriptions",
        str(fine),
        "--n-images",
        "24",
        "--top",
        "2",
        "--out",
        str(matched),
    )
    assert cli(*match).returncode == 0
    table = pq.read_table(matched)
    assert table.num_rows == 24 and set(table.column_names) >= {"image", "label", "class", "descriptions"}
    for row in table.drop(["image"]).to_pylist():
        assert len(row["descriptions"]) == 2 and set(row["descriptions"]) <= set(descriptions[row["class"]])
        assert row["scores"][0] >= row["scores"][1]
    assert cli("gist", "summarize", str(matched), "--out", str(pairs)).returncode == 0
    out = pq.read_table(pairs)
    assert out.column_names == ["image", "caption", "label", "class"] and out.num_rows == 24
    assert out.column("label").to_pylist() == table.column("label").to_pylist()
    classes = table.column("class").to_pylist()
    assert all(c in caption for c, caption in zip(classes, out.column("caption").to_pylist()))
    first = [p.read_bytes() for p in (fine, matched, pairs)]
    assert cli("gist", "describe", "world:shape", "--out", str(fine)).returncode == 0
    assert cli(*match).returncode == 0
    assert "0 asked" in cli("gist", "summarize", str(matched), "--out", str(pairs)).stdout
    assert [p.read_bytes() for p in (fine, matched, pairs)] == first
    # the pairs train as a table source
    from vislang.data.samples import read_table

    images, captions = read_table(pairs, "image", ["caption"])
    assert len(images) == 24 and len(captions) == 1


@pytest.mark.parametrize("stage", ["match", "summarize"])
def test_bad_input_is_one_line(tmp_path, stage):
    missing = tmp_path / "missing.json"
    args = ("gist", "match", "nowhere", "--descriptions", str(missing), "--out", str(tmp_path / "m.parquet"))
    if stage == "summarize":
        args = ("gist", "summarize", str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "p.parquet"))
    result = cli(*args)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "missing" in result.stderr


def test_variants_add_descriptions_of_the_variation_inside_each_class():
    from vislang.adapt.gist import describe_fine_grained
    from vislang.llm.world import WorldBackend

    plain = describe_fine_grained(WorldBackend(), ["triangle"], 2, 0.0)
    varied = describe_fine_grained(WorldBackend(), ["triangle"], 2, 0.0, ["red", "blue"])
    assert set(plain["triangle"]) < set(varied["triangle"])
    assert any("red triangle" in d for d in varied["triangle"]) and any(
        "blue triangle" in d for d in varied["triangle"]
    )
    assert not any("red" in d or "blue" in d for d in plain["triangle"])
