"""CapFilt: a captioner writes captions, a contrastive model scores both, the better (or every
caption above a threshold) is kept; the command line."""

from __future__ import annotations

import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from conftest import export_untrained
from vislang.curate.capfilt import capfilt_pool
from vislang.data.world import World
from vislang.errors import ConfigError
from vislang.experiment import build_config


def _model(tmp_path, name: str, objective: str, overrides: list[str]) -> str:
    world = World(32, seed=0)
    texts = [world.sample("train", i)[1] for i in range(300)]
    return export_untrained(build_config({"objective": objective}, overrides), texts, tmp_path / name)


@pytest.fixture
def setup(tmp_path, tiny_overrides):
    from PIL import Image

    pool = tmp_path / "pool"
    pool.mkdir()
    world = World(32, seed=1)
    for i in range(10):
        image, caption, _ = world.sample("test", i)
        Image.fromarray(image).save(pool / f"{i:03d}.png")
        (pool / f"{i:03d}.txt").write_text(caption)
    return tmp_path, _model(tmp_path, "cap", "cap", tiny_overrides), _model(tmp_path, "clip", "clip", tiny_overrides)


def test_capfilt_keeps_the_better_caption_or_all_above_a_threshold(setup):
    tmp_path, captioner, scorer = setup
    best = capfilt_pool([str(tmp_path / "pool")], tmp_path / "best", captioner, scorer)
    rows = pq.read_table(tmp_path / "best" / "00000.parquet").to_pylist()
    assert best["images"] == len(rows) == 10 and best["dropped"] == 0
    for row in rows:
        better = row["original"] if row["score_original"] >= row["score_generated"] else row["generated"]
        assert row["kept"] == [better] and row["generated"]
    threshold = sorted(r["score_original"] for r in rows)[5]
    cut = capfilt_pool([str(tmp_path / "pool")], tmp_path / "cut", captioner, scorer, threshold=threshold)
    for row in pq.read_table(tmp_path / "cut" / "00000.parquet").to_pylist():
        expected = [c for c, s in ((row["original"], row["score_original"]), (row["generated"], row["score_generated"]))
                    if s >= threshold]  # fmt: skip
        assert row["kept"] == expected
    assert cut["kept_original"] == 5 and cut["dropped"] == sum(
        not r["kept"] for r in pq.read_table(tmp_path / "cut" / "00000.parquet").to_pylist()
    )
    with pytest.raises(ConfigError, match="writes no captions"):
        capfilt_pool([str(tmp_path / "pool")], tmp_path / "x", scorer, scorer)


def test_capfilt_command(setup):
    tmp_path, captioner, scorer = setup
    command = [sys.executable, "-m", "vislang.cli", "curate", "capfilt", str(tmp_path / "pool"), "--out",
               str(tmp_path / "c"), "--captioner", captioner, "--scorer", scorer, "--method", "beam"]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "10 images" in run.stdout
