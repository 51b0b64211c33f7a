"""The ``vislang`` command through subprocess: help texts, one-line errors, eval and data."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vislang.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("command", [[], ["demo"], ["train"], ["eval"], ["config"], ["data"], ["data", "world"]])
def test_help(command):
    result = run(*command, "--help")
    assert result.returncode == 0 and "usage: vislang" in result.stdout


def _assert_one_line_error(result: subprocess.CompletedProcess, needle: str) -> None:
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vislang: error:") and needle in lines[0], result.stderr


@pytest.mark.parametrize(
    ("yaml_text", "sets", "needle"),
    [
        ("train:\n  stepz: 3\n", [], "unknown config key 'train.stepz'"),
        ("train:\n  steps: many\n", [], "train.steps"),
        ("objective: clip\n", ["model.vision.depth=two"], "model.vision.depth"),
        ("data:\n  sources: [{kind: table, path: /nonexistent/pairs.csv}]\n", [], "/nonexistent/pairs.csv"),
        ("tokenizer:\n  path: /nonexistent/tokenizer.json\n", [], "/nonexistent/tokenizer.json"),
    ],
)
def test_train_config_problems_are_one_line(tmp_path, yaml_text, sets, needle):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    args = [arg for s in sets for arg in ("--set", s)]
    result = run("train", str(config), "--out", str(tmp_path / "run"), *args)
    _assert_one_line_error(result, needle)


def test_missing_config_file_and_checkpoint(tmp_path):
    _assert_one_line_error(run("train", str(tmp_path / "nope.yaml")), "nope.yaml")
    _assert_one_line_error(run("eval", str(tmp_path / "nope.pt")), "nope.pt")


def test_train_then_eval_then_load(tmp_path, tiny_overrides):
    config = tmp_path / "tiny.yaml"
    config.write_text("objective: clip\n")
    sets = [arg for o in tiny_overrides for arg in ("--set", o)]
    result = run("train", str(config), "--out", str(tmp_path / "run"), "--quiet", *sets)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    result = run("eval", str(tmp_path / "run"), "--set", "eval.batch_size=16", "--out", str(tmp_path / "eval.json"))
    assert result.returncode == 0, result.stderr
    again = json.loads((tmp_path / "eval.json").read_text())
    assert again["zeroshot/color/top1"] == pytest.approx(metrics["zeroshot/color/top1"])
    assert "compositional/order/acc" in result.stdout

    import torch
    from PIL import Image

    import vislang

    model, tokenizer, preprocess = vislang.load(tmp_path / "run")
    image = model.encode_image(preprocess(Image.new("RGB", (50, 40), (200, 30, 30)))[None])
    text = model.encode_text(tokenizer(["a red circle", "a blue star"]))
    assert image.shape == (1, 32) and text.shape == (2, 32)
    assert torch.allclose(text.norm(dim=-1), torch.ones(2))


def test_config_prints_resolved_yaml():
    result = run("config", "--set", "train.steps=7")
    assert result.returncode == 0 and "steps: 7" in result.stdout and "objective:\n  kind: clip" in result.stdout


def test_data_world_writes_grid(tmp_path):
    result = run("data", "world", "--out", str(tmp_path), "--n", "10")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "grid.png").exists()
    assert len((tmp_path / "captions.txt").read_text().splitlines()) == 10


def test_csv_source_skips_and_counts_bad_rows(tmp_path, tiny_overrides):
    from PIL import Image

    for i, color in enumerate([(255, 0, 0), (0, 0, 255), (0, 255, 0)]):
        Image.new("RGB", (40, 40), color).save(tmp_path / f"{i}.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    (tmp_path / "pairs.csv").write_text(
        "image,caption\n0.png,a red square\n1.png,a blue square\n2.png,a green square\n"
        "broken.png,a broken file\nmissing.png,a missing file\n0.png,   \n"
    )
    sets = [
        arg
        for o in tiny_overrides
        + [
            f"data.sources=[{{kind: table, path: '{tmp_path / 'pairs.csv'}'}}]",
            "train.steps=3",
            "eval.tasks=[{type: zeroshot, n: 40}]",
        ]
        for arg in ("--set", o)
    ]
    config = tmp_path / "csv.yaml"
    config.write_text("objective: clip\n")
    result = run("train", str(config), "--out", str(tmp_path / "run"), "--quiet", *sets)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # 3 steps x 16 samples cycle the 6 rows: each bad row is met 8 times
    assert metrics["data/skipped/bad_image"] == 8
    assert metrics["data/skipped/missing_file"] == 8
    assert metrics["data/skipped/empty_caption"] == 8


def test_source_options_are_not_spliced_into_yaml(tmp_path, capsys):
    """A path with a quote works, and a caption-column list cannot inject config keys (the CLI
    builds the source config as objects, not as YAML text)."""
    from vislang.cli import main

    folder = tmp_path / "it's here"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (32, 32), (40 * i, 0, 0)).save(folder / f"{i}.png")
    (folder / "it's.csv").write_text("image,caption\n" + "".join(f"{i}.png,a red square {i}\n" for i in range(3)))
    assert main(["data", "inspect", "table", str(folder / "it's.csv"), "--n", "3", "--image-size", "16"]) == 0
    assert "3 of 3 samples usable" in capsys.readouterr().out
    injected = "caption], name: x, y: [z"
    code = main(["data", "inspect", "table", str(folder / "it's.csv"), "--caption-columns", injected])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no column" in err


def test_demo_on_an_existing_run_says_to_choose_another_out(tmp_path, capsys):
    from vislang.cli import main

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "step_00000010.pt").write_bytes(b"")
    assert main(["demo", "--out", str(tmp_path), "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "choose another --out" in err and "--resume" not in err
