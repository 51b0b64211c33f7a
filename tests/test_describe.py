"""``vislang describe`` (CuPL): the world backend through the command, the HTTP backend against a
loopback server, the cleaning of answers and the one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from test_llm_backend import ChatServer
from vislang.cli import main
from vislang.data.prompts import read_descriptions
from vislang.data.world import COLORS, SHAPES
from vislang.llm import CUPL_QUESTIONS, clean_descriptions, cupl_requests
from vislang.llm.cupl import read_classes


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vislang.cli", "describe", *args], capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def assert_one_line_error(returncode: int, stderr: str, needle: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert returncode == 2 and "Traceback" not in stderr
    assert len(lines) == 1 and lines[0].startswith("vislang: error:") and needle in lines[0], stderr


@pytest.fixture
def server():
    s = ChatServer()
    yield s
    s.close()


def test_world_backend_writes_descriptions_the_evaluation_reads_and_a_rerun_is_identical(tmp_path):
    classes = tmp_path / "classes.json"
    names = [*SHAPES, *COLORS]
    classes.write_text(json.dumps(names))
    out = tmp_path / "descriptions.json"
    result = run(str(classes), "--out", str(out), "--n", "4")
    assert result.returncode == 0, result.stderr
    descriptions = read_descriptions(out)
    assert list(descriptions) == names
    for name, texts in descriptions.items():
        assert len(texts) >= 3 and len(set(texts)) == len(texts)
        assert all(name in text.lower() and "\n" not in text for text in texts)
    cache = tmp_path / "descriptions.cache.jsonl"
    first, first_cache = out.read_bytes(), cache.read_bytes()
    assert len(first_cache.splitlines()) == len(names) * len(CUPL_QUESTIONS)
    result = run(str(classes), "--out", str(out), "--n", "4")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == first and cache.read_bytes() == first_cache
    assert f"{len(names) * len(CUPL_QUESTIONS)} prompts from the cache" in result.stdout


def test_a_class_the_world_does_not_know_is_one_line(tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("circle\ngoldfish\n")
    out = tmp_path / "d.json"
    result = run(str(classes), "--out", str(out))
    assert_one_line_error(result.returncode, result.stderr, "names no class of the built-in world")
    assert "goldfish" in result.stderr and not out.exists()


def test_describe_through_http_caches_and_a_rerun_asks_nothing(server, tmp_path, capsys):
    classes = tmp_path / "classes.txt"
    classes.write_text("goldfish\naxolotl\n")
    out = tmp_path / "d.json"
    args = ["describe", str(classes), "--backend", "http", "--base-url", server.url, "--model", "m", "--n", "2",
            "--out", str(out), "--api-key-env", "VISLANG_NO_SUCH_KEY"]  # fmt: skip
    assert main(args) == 0
    assert len(server.requests) == 2 * len(CUPL_QUESTIONS)
    sent = [r["body"]["messages"][0]["content"] for r in server.requests]
    assert sent[:2] == ["Describe what a goldfish looks like", "How can you identify a goldfish?"]
    assert "Describe an image from the internet of an axolotl" in sent
    assert {(r["body"]["temperature"], r["body"]["max_tokens"], r["body"]["n"]) for r in server.requests} == {
        (0.99, 50, 2)
    }
    descriptions = read_descriptions(out)
    assert list(descriptions) == ["goldfish", "axolotl"] and len(descriptions["goldfish"]) == 10
    first = out.read_bytes()
    server.requests.clear()
    assert main(args) == 0 and server.requests == [] and out.read_bytes() == first
    replay = tmp_path / "replayed.json"
    recorded = ["describe", str(classes), "--backend", "recorded", "--recorded", str(tmp_path / "d.cache.jsonl"),
                "--n", "2", "--out", str(replay)]  # fmt: skip
    assert main(recorded) == 0 and replay.read_bytes() == first
    capsys.readouterr()


def test_describe_malformed_answer_is_one_line_and_the_cache_is_unchanged(server, tmp_path, capsys):
    classes = tmp_path / "classes.txt"
    classes.write_text("goldfish\n")
    cache = tmp_path / "my.cache.jsonl"
    args = ["describe", str(classes), "--backend", "http", "--base-url", server.url, "--model", "m", "--n", "1",
            "--out", str(tmp_path / "d.json"), "--cache", str(cache)]  # fmt: skip
    server.script = [(200, b"{not json", {}, 0.0)]
    assert main(args) == 2
    assert_one_line_error(2, capsys.readouterr().err, "malformed response (not JSON)")
    assert not cache.exists() and not (tmp_path / "d.json").exists()
    assert main(args) == 0  # the server answers now
    before = cache.read_bytes()
    server.script = [(200, {"choices": [{"message": {"content": 3}}]}, {}, 0.0)]
    classes.write_text("goldfish\ncarp\n")
    assert main(args) == 2
    assert_one_line_error(2, capsys.readouterr().err, "content is not a string")
    assert cache.read_bytes() == before


def test_backend_flags_each_kind_needs_are_one_line(tmp_path, capsys):
    out = str(tmp_path / "d.json")
    for backend, needle in [("http", "--model NAME"), ("local", "--model-path DIR"), ("recorded", "--recorded FILE")]:
        assert main(["describe", "cifar10", "--backend", backend, "--out", out]) == 2
        assert_one_line_error(2, capsys.readouterr().err, f"describe --backend {backend} needs {needle}")
    assert main(["describe", "cifar10", "--backend", "http", "--model", "m", "--timeout", "-1", "--out", out]) == 2
    assert_one_line_error(2, capsys.readouterr().err, "describe: timeout: must be greater than 0")


def test_classes_from_a_shipped_set_a_file_or_neither(tmp_path):
    assert read_classes("cifar10")[:2] == ["airplane", "automobile"]
    listed = tmp_path / "names.txt"
    listed.write_text("circle\nstar\n")
    assert read_classes(str(listed)) == ["circle", "star"]
    with pytest.raises(Exception, match="class-names file not found"):
        read_classes(str(tmp_path / "missing.txt"))
    with pytest.raises(Exception, match="neither a class-names file nor a shipped set"):
        read_classes("cifar11")


def test_cleaning_keeps_one_line_per_answer_that_names_its_class():
    texts = ["  A goldfish is orange.\nIt swims.", "- a small orange fish", "A goldfish is orange.", "", "   \n",
             '"Goldfish are shiny"', "1. A GOLDFISH IS ORANGE."]  # fmt: skip
    assert clean_descriptions(texts, "goldfish") == [
        "A goldfish is orange.",
        "goldfish: a small orange fish.",
        "Goldfish are shiny.",
    ]
    assert clean_descriptions(["two goldfishes' tails", "goldfishbowl"], "goldfish") == [
        "two goldfishes' tails.",
        "goldfish: goldfishbowl.",
    ]


def test_cupl_questions_use_the_right_article():
    assert [r.text for r in cupl_requests("axolotl")][:1] == ["Describe what an axolotl looks like"]
    assert {r.kind for r in cupl_requests("goldfish")} == {"describe"}
    assert cupl_requests("goldfish")[-1].text == "A caption of an image of a goldfish:"
