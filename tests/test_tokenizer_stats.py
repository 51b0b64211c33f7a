"""`vislang tokenizer stats`: lengths per tokenizer against a byte-level BPE, the json and the
histogram it writes, and one-line errors for bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from test_tokenizer_phrases import report_corpus
from vislang.errors import DataError
from vislang.tokenizer_stats import length_stats, percentile, read_corpus


def vislang(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vislang.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_length_stats_against_numpy():
    counts = [3, 9, 12, 30, 31, 5, 77, 100]
    stats = length_stats(counts, 30)
    assert stats["mean"] == pytest.approx(np.mean(counts))
    assert stats["median"] == pytest.approx(np.median(counts))
    assert stats["p95"] == pytest.approx(np.percentile(counts, 95))
    assert stats["max"] == 100 and stats["texts"] == 8
    assert stats["truncated_share"] == pytest.approx(3 / 8)
    assert stats["mean_tokens_lost"] == pytest.approx((1 + 47 + 70) / 8)
    assert percentile([4.0], 95) == 4.0


def test_corpus_tables_and_bad_columns(tmp_path):
    texts = ["no pericardial effusion.", "trace mitral regurgitation, heart rate 60"]
    with (tmp_path / "c.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "report"])
        writer.writerows(enumerate(texts))
    assert read_corpus(tmp_path / "c.csv", "report") == texts
    with pytest.raises(DataError, match="no column 'caption'"):
        read_corpus(tmp_path / "c.csv")
    (tmp_path / "c.txt").write_text("\n".join(texts) + "\n\n")
    assert read_corpus(tmp_path / "c.txt") == texts
    with pytest.raises(DataError, match="corpus not found"):
        read_corpus(tmp_path / "nope.txt")


def test_stats_cli_writes_json_and_png(tmp_path):
    (tmp_path / "reports.txt").write_text("\n".join(report_corpus(400)) + "\n")
    (tmp_path / "regex.yaml").write_text("tokenizer: {kind: regex, vocab_size: 512, mine_phrases: 64}\n")
    result = vislang("tokenizer", "stats", "reports.txt", "--config", "regex.yaml", "--context-length", "32",
                     "--out", "stats", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "| regex.yaml (regex) | " in result.stdout and "| byte-level BPE (vocab 512) |" in result.stdout
    saved = json.loads((tmp_path / "stats" / "stats.json").read_text())
    assert saved["context_length"] == 32
    regex, bpe = saved["tokenizers"]["regex.yaml (regex)"], saved["tokenizers"]["byte-level BPE (vocab 512)"]
    assert regex["texts"] == bpe["texts"] == 400
    assert bpe["mean"] >= 4 * regex["mean"]
    assert bpe["truncated_share"] > 0.9 and regex["truncated_share"] < bpe["truncated_share"]
    assert (tmp_path / "stats" / "lengths.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_phrases_file_is_one_line_exit_2(tmp_path):
    (tmp_path / "reports.txt").write_text("no pericardial effusion.\n")
    (tmp_path / "bad.yaml").write_text("tokenizer: {kind: regex, phrases: missing.txt}\n")
    result = vislang("tokenizer", "stats", "reports.txt", "--config", "bad.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "missing.txt" in result.stderr
