"""`vislang eval --suite`: the files a suite run leaves, the user's own ImageFolder in one command,
`--compare`, and the walls a real-data trial hit (world evaluators on other data, capped
held-out retrieval, silent log lines, preprocess's shape)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import export_untrained
from vislang.eval.suite import TaskResult, read_suite
from vislang.experiment import build_config
from vislang.train.loop import headline

WORDS = ["a red circle", "a blue square", "a green triangle above a red star", "a photo of a yellow thing"] * 40


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vislang.cli", *args], capture_output=True, text=True)


@pytest.fixture
def model_dir(tiny_config, tmp_path):
    return export_untrained(tiny_config, WORDS, tmp_path / "model")


def _folder(root, classes=("red", "green", "blue"), per_class=4):
    colours = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (40 + i, 36), colours[name]).save(root / name / f"{i}.png")


def test_world_suite_leaves_summary_json_and_plots(model_dir, tmp_path):
    suite = tmp_path / "world.yaml"
    suite.write_text(
        "# vislang eval MODEL --suite world.yaml\nworkers: 0\ntasks:\n"
        "  - {type: zeroshot, n: 30}\n  - {type: retrieval, n: 30, ks: [1, 2, 5, 10]}\n  - {type: compositional, n: 10}\n"
        "  - {type: probe, n: 30, n_train: 40, shots: [1, 5]}\n"
    )
    out = tmp_path / "eval"
    run = _cli("eval", model_dir, "--suite", str(suite), "--out", str(out), "--quiet")
    assert run.returncode == 0, run.stderr
    assert "average of main metrics" in run.stdout
    record = json.loads((out / "zeroshot_shape.json").read_text())
    assert record["task"] == "zeroshot_classification" and record["dataset"] == "shape"
    assert record["result"] == "zeroshot/shape"
    assert set(record["metrics"]) == {"acc1", "acc5", "mean_per_class_recall"} and record["ties"] == "clip_benchmark"
    retrieval = json.loads((out / "retrieval.json").read_text())
    assert retrieval["task"] == "zeroshot_retrieval" and "image_retrieval_recall@5" in retrieval["metrics"]
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert rows[-1]["task"] == "average"
    main = [float(r["value"]) for r in rows[:-1]]
    assert float(rows[-1]["value"]) == pytest.approx(np.mean(main), abs=1e-6)
    assert {r["task"] for r in rows} >= {"zeroshot/shape", "retrieval", "compositional/relation", "probe/shape"}
    summary = (out / "summary.md").read_text()
    for png in ("zeroshot_shape_per_class.png", "zeroshot_shape_confusion.png", "retrieval_recall.png"):
        assert (out / png).stat().st_size > 1000 and f"]({png})" in summary
    # the shared feature cache: shape and colour use the same images, encoded once
    by_task = {r["task"]: int(r["images_encoded"]) for r in rows[:-1]}
    assert by_task["zeroshot/shape"] == 30 and by_task["zeroshot/color"] == 0

    compare = _cli("eval", "--compare", str(out), str(out))
    assert compare.returncode == 0, compare.stderr
    assert "| zeroshot/shape |" in compare.stdout and "| average |" in compare.stdout


def test_zeroshot_on_own_imagefolder_in_one_command(model_dir, tmp_path):
    """The trial's first wall: the user's class names and labelled images, one command."""
    _folder(tmp_path / "pets" / "val")
    (tmp_path / "suite.yaml").write_text(
        "tasks:\n  - type: zeroshot\n    dataset: {format: imagefolder, path: pets, split: val, templates: ['a photo of {c}.']}\n"
    )
    run = _cli(
        "eval", model_dir, "--suite", str(tmp_path / "suite.yaml"), "--out", str(tmp_path / "out"), "--workers", "0"
    )
    assert run.returncode == 0, run.stderr
    record = json.loads((tmp_path / "out" / "zeroshot_pets.json").read_text())
    assert record["metrics"]["acc5"] is None  # three classes: no top-5, as CLIP_benchmark
    assert 0 <= record["metrics"]["acc1"] <= 1 and "zeroshot/pets" in run.stdout

    (tmp_path / "pets" / "val" / "empty").mkdir()
    broken = _cli("eval", model_dir, "--suite", str(tmp_path / "suite.yaml"))
    assert broken.returncode == 2 and "empty" in broken.stderr and "Traceback" not in broken.stderr


def test_bad_suite_files_are_one_line_errors(model_dir, tmp_path):
    cases = {
        "tasks:\n  - {type: nope}\n": "unknown evaluation task type 'nope'",
        "tasks:\n  - {type: zeroshot, dataset: {format: imagefolder, path: missing}}\n": "missing",
        "tasks: []\n": "tasks",
        "batch_size: 0\ntasks:\n  - {type: zeroshot}\n": "batch_size",
    }
    for text, expected in cases.items():
        (tmp_path / "s.yaml").write_text(text)
        run = _cli("eval", model_dir, "--suite", str(tmp_path / "s.yaml"))
        assert run.returncode == 2 and expected in run.stderr and "Traceback" not in run.stderr, (text, run.stderr)
        assert len(run.stderr.strip().splitlines()) == 1
    run = _cli("eval", model_dir, "--suite", "no_such_suite")
    assert run.returncode == 2 and "world" in run.stderr  # names the shipped suites


def test_shipped_suite_files_validate():
    world = read_suite("world")
    assert [t.type for t in world.tasks][:3] == ["zeroshot", "retrieval", "compositional"]


def test_world_tasks_run_only_when_the_world_is_trained_on_or_named(tmp_path):
    folder = {"data": {"sources": [{"kind": "folder", "path": str(tmp_path)}]}}
    assert build_config(folder).eval.tasks == []
    assert [t.type for t in build_config({}).eval.tasks] == ["zeroshot", "retrieval", "compositional"]
    named = build_config({**folder, "eval": {"tasks": [{"type": "zeroshot"}]}})
    assert [t.type for t in named.eval.tasks] == ["zeroshot"]
    # what a run saves, it reads back as it was
    again = build_config(build_config(folder).model_dump(mode="json"))
    assert again.eval.tasks == []


def test_held_out_retrieval_scores_the_whole_set(tmp_path, tiny_config):
    from vislang.eval.retrieval import RetrievalTask
    from vislang.experiment import eval_context

    for i in range(57):
        Image.new("RGB", (20, 20), (i * 4, 0, 0)).save(tmp_path / f"{i}.png")
        (tmp_path / f"{i}.txt").write_text(f"red number {i}")
    task = RetrievalTask(source={"kind": "folder", "path": str(tmp_path)})
    [evaluator] = task.build(eval_context(tiny_config, lambda texts: torch.zeros(len(texts), 24, dtype=torch.long)))
    assert len(evaluator.data.captions) == 57 and len(evaluator.texts) == 57


def test_console_line_shows_the_main_metrics_or_whatever_there_is():
    assert headline({"retrieval/text_to_image/R@1": 0.5, "retrieval/mean_R@1": 0.4}) == {"retrieval/mean_R@1": 0.4}
    only = {"probe/knn/x": 0.1, "other/thing": 0.2}
    assert headline(only) == only  # never an empty "step N:" line
    assert headline({}) == {}
    result = TaskResult("sugarcrepe", "sugarcrepe", {"replace_obj/acc": 0.2, "mean/acc": 0.3}, main="mean/acc")
    assert result.main_metric() == "mean/acc"


def test_preprocess_returns_one_image_as_3_h_w(model_dir):
    import vislang

    model, _, preprocess = vislang.load(model_dir)
    images = [Image.new("RGB", (50, 40), (200, 30, 30)), Image.new("RGB", (30, 60), (0, 30, 200))]
    one = preprocess(images[0])
    assert one.shape == (3, 32, 32)
    stacked = torch.stack([preprocess(im) for im in images])
    assert torch.equal(stacked, preprocess(images))
    assert model.encode_image(stacked).shape == (2, 32)


def test_dataset_tasks_run_in_training_on_their_schedule_and_are_logged(tiny_overrides, tmp_path):
    """The suite's task types in a run config's eval.tasks: a zero-shot task on an ImageFolder
    every 6 steps and world retrieval at the end only; every logged evaluation shows a line."""
    from vislang.files import read_jsonl
    from vislang.train.loop import train

    _folder(tmp_path / "colours")
    tasks = (
        f"eval.tasks=[{{type: zeroshot, every: 6, dataset: {{format: imagefolder, path: {tmp_path / 'colours'}, "
        "templates: ['a {c} thing']}}, {type: retrieval, n: 20, every: 100}]"
    )
    overrides = [o for o in tiny_overrides if not o.startswith("eval.tasks")] + [tasks]
    train(build_config({}, overrides), tmp_path / "run", quiet=True)
    records = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "zeroshot/colours/top1" in r]
    assert [r["step"] for r in records] == [6, 12]
    last = next(r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "retrieval/mean_R@1" in r)
    assert last["step"] == 12
    lines = [line for line in (tmp_path / "run" / "log.txt").read_text().splitlines() if line.startswith("step ")]
    assert lines and all(line.split(":", 1)[1].strip() for line in lines)


def test_a_bad_image_in_a_loader_worker_is_one_line(model_dir, tmp_path):
    _folder(tmp_path / "pets")
    (tmp_path / "pets" / "red" / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "s.yaml").write_text(
        "workers: 2\ntasks:\n  - {type: zeroshot, dataset: {format: imagefolder, path: pets}}\n"
    )
    run = _cli("eval", model_dir, "--suite", str(tmp_path / "s.yaml"), "--quiet")
    assert run.returncode == 2 and "broken.png" in run.stderr and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_suite_paths_resolve_against_the_suite_file(tmp_path, monkeypatch):
    (tmp_path / "suite").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "suite" / "s.yaml").write_text(
        "tasks:\n  - {type: retrieval, source: {kind: folder, path: held}, name: held}\n"
        "  - {type: sugarcrepe, root: ~/sc, images: coco}\n  - {type: retrieval, n: 5, ks: [5, 10]}\n"
    )
    suite = read_suite(str(tmp_path / "suite" / "s.yaml"))
    assert suite.tasks[0].source.path == str(tmp_path / "suite" / "held")
    assert suite.tasks[1].root == str(tmp_path / "sc") and suite.tasks[1].images == str(tmp_path / "suite" / "coco")


def test_probe_refuses_splits_with_different_classes(model_dir, tmp_path):
    from vislang.errors import DataError
    from vislang.eval.probe import ProbeTask
    from vislang.experiment import eval_context
    from vislang.restore import load_objective

    _folder(tmp_path / "d" / "train", classes=("red", "green", "blue"))
    _folder(tmp_path / "d" / "test", classes=("red", "green"))
    (tmp_path / "d" / "test" / "blue2").mkdir()
    Image.new("RGB", (20, 20), (0, 0, 250)).save(tmp_path / "d" / "test" / "blue2" / "0.png")
    _, tokenizer, cfg = load_objective(model_dir)
    task = ProbeTask(dataset={"format": "imagefolder", "path": str(tmp_path / "d")})
    with pytest.raises(DataError, match="different classes"):
        task.build(eval_context(cfg, tokenizer))
