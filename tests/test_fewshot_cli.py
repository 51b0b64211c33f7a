"""``vislang fewshot`` end to end on a tiny untrained model: a world suite with a shift and an
ImageFolder with a train split, the outputs, the zero-shot rows equal to ``vislang eval``'s,
the notes for what is skipped, and bad input as one line with exit status 2."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY, export_untrained
from vislang.adapt.fewshot import METHODS, FewshotOptions, plan
from vislang.cli import fewshot as fewshot_command
from vislang.cli import main
from vislang.data.world import COLORS, SHAPES
from vislang.experiment import build_config

TEXTS = [f"a photo of a {c} {s}" for c in COLORS for s in SHAPES] * 10 + ["a photo of a red thing"] * 5
COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}


def _folder(root, per_class: int) -> None:
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            shade = tuple(max(0, min(255, v + 7 * i - 20)) for v in rgb)
            Image.new("RGB", (40 + i, 36), shade).save(root / name / f"{i}.png")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("fewshot")
    torch.manual_seed(0)
    model = export_untrained(build_config({}, TINY), TEXTS, root / "model")
    _folder(root / "colours" / "train", 12)
    _folder(root / "colours" / "test", 3)
    _folder(root / "flat", 3)  # one split only: no train split to draw shots from
    world = "  - {type: zeroshot, n: 30, world_sets: [shape]}\n"
    world += "  - {type: zeroshot, n: 30, world_sets: [shape], rendering: sketch}\n"
    folders = (
        "  - {type: zeroshot, dataset: {format: imagefolder, path: colours, split: test, templates: ['a {c} thing']}}\n"
        "  - {type: zeroshot, dataset: {format: imagefolder, path: flat, templates: ['a {c} thing']}}\n"
    )
    head = "batch_size: 64\nworkers: 0\ntasks:\n"
    (root / "suite.yaml").write_text(head + world + folders + "  - {type: retrieval, n: 10}\n")
    unseen = "  - {type: zeroshot, n: 30, world_sets: [color_unseen], rendering: palette}\n"
    (root / "eval.yaml").write_text(head + world + unseen + folders)
    return {"root": root, "model": model, "suite": str(root / "suite.yaml"), "eval": str(root / "eval.yaml")}


ARGS = ["--shots", "1", "2", "--seeds", "2", "--n-train", "60", "--n-val", "24", "--n-pool", "30"]
ARGS += ["--support-per-class", "2", "--epochs", "2", "--probe-max-iter", "30", "--quiet"]


def test_fewshot_writes_tables_and_figures(setup, capsys):
    out = setup["root"] / "out"
    assert main(["fewshot", setup["suite"], setup["model"], "--out", str(out), *ARGS]) == 0
    printed = capsys.readouterr()
    assert "retrieval: a retrieval task, not a classification task: skipped" in printed.err
    assert "zeroshot/flat: no train split" in printed.err
    rows = list(csv.DictReader((out / "fewshot.csv").open()))
    tasks = ["zeroshot/shape", "zeroshot_sketch/shape", "zeroshot/colours"]
    assert list(dict.fromkeys(r["task"] for r in rows)) == tasks
    trains = {r["task"]: r["train"] for r in rows}
    assert trains == {"zeroshot/shape": "world/shape", "zeroshot_sketch/shape": "world/shape",
                      "zeroshot/colours": "dataset/zeroshot/colours"}  # fmt: skip
    for task in tasks:
        mine = [r for r in rows if r["task"] == task]
        assert sorted((r["method"], r["shots"]) for r in mine) == sorted(
            [("zeroshot", "0"), ("sus_x", "0")] + [(m, k) for m in METHODS[1:] if m != "sus_x" for k in ("1", "2")]
        )
        for r in mine:
            accs = [float(a) for a in r["accs"].split(";")]
            assert len(accs) == int(r["seeds"]) == (1 if r["shots"] == "0" else 2)
            assert float(r["mean"]) == pytest.approx(np.mean(accs), abs=1e-6)
            assert float(r["std"]) == pytest.approx(np.std(accs), abs=1e-6)
            assert all(0.0 <= a <= 1.0 for a in accs)
        png = out / f"{task.replace('/', '_')}.png"
        assert png.stat().st_size > 5000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"## {task}" in (out / "fewshot.md").read_text()
    record = json.loads((out / "fewshot.json").read_text())
    tip = next(r for r in record["rows"] if r["method"] == "tip_adapter")
    assert set(tip["params"][0]) >= {"alpha", "beta", "val_acc"}
    assert record["splits"]["world/shape"] == {"shot_candidates": 60, "val": 24, "pool": 30}
    # the ImageFolder's 36 train images: a quarter each to validation and pool, the rest candidates
    assert record["splits"]["dataset/zeroshot/colours"] == {"shot_candidates": 18, "val": 9, "pool": 9}


def test_zeroshot_rows_are_vislang_evals_numbers(setup):
    from vislang.api import load_objective
    from vislang.eval.suite import read_suite, run_suite
    from vislang.experiment import eval_context

    out = setup["root"] / "zs"
    assert main(["fewshot", setup["eval"], setup["model"], "--out", str(out), "--methods", "zeroshot", *ARGS]) == 0
    rows = {r["task"]: float(r["mean"]) for r in csv.DictReader((out / "fewshot.csv").open())}
    objective, tokenizer, cfg = load_objective(setup["model"])
    results = run_suite(objective.eval(), read_suite(setup["eval"]).tasks, eval_context(cfg, tokenizer, 64))
    expected = {r.name: r.metrics["top1"] for r in results if "top1" in r.metrics}
    assert rows == pytest.approx({k: v for k, v in expected.items() if k != "zeroshot/flat"}, abs=1e-6)


def test_world_slices_are_disjoint_and_labels_follow_the_task(setup):
    from vislang.api import load_objective
    from vislang.eval.suite import read_suite
    from vislang.experiment import eval_context

    _, tokenizer, cfg = load_objective(setup["model"])
    options = FewshotOptions(n_train=40, n_val=10, n_pool=20)
    sources, targets, notes = plan(read_suite(setup["eval"]).tasks, eval_context(cfg, tokenizer, 64), options)
    shape = sources["world/shape"]
    parts = [shape.candidates.images.images, shape.val.images.images, shape.pool.images]
    flat = [img.tobytes() for part in parts for img in part]
    assert len(flat) == 70 and len(set(flat)) == 70  # no image in two parts
    assert [t.name for t in targets if t.source == "world/shape"] == ["zeroshot/shape", "zeroshot_sketch/shape"]
    assert [t.name for t in targets if t.source == "world/color"] == ["zeroshot_palette/color_unseen"]
    assert list(sources["world/color"].candidates.classnames) == list(COLORS)
    assert list(shape.candidates.classnames) == list(SHAPES)
    assert any("flat" in note for note in notes)


def test_method_names_match_the_library():
    assert fewshot_command.METHOD_NAMES == METHODS


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vislang.cli", *argv], capture_output=True, text=True, timeout=300)


def test_bad_input_is_one_line_exit_2(setup, tmp_path, capsys):
    probe_only = tmp_path / "probe.yaml"
    probe_only.write_text("tasks:\n  - {type: retrieval, n: 10}\n")
    cases = [
        ([str(probe_only), setup["model"]], "no zero-shot classification task"),
        ([setup["suite"], str(tmp_path / "missing")], "missing"),
        ([setup["suite"], setup["model"], "--n-pool", "3", "--support-per-class", "5"], "world/shape: the pool has 3"),
    ]
    for argv, message in cases:
        assert main(["fewshot", *argv, "--out", str(tmp_path / "o"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and len([line for line in err.splitlines() if "error" in line]) == 1, err
    run = _cli("fewshot", "no_such_suite", setup["model"], "--out", str(tmp_path / "o"))  # the real exit status
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines() == [run.stderr.strip()] and "no_such_suite: no such suite file" in run.stderr


def test_sus_x_retrieves_from_a_pool_the_user_names(setup, capsys, monkeypatch):
    from vislang.adapt import fewshot

    pool = setup["root"] / "user_pool"
    _folder(pool / "nested", 2)  # folder names must not be read as labels
    seen = []
    real = fewshot.fm.retrieve_support

    def spy(*args, **kwargs):
        seen.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(fewshot.fm, "retrieve_support", spy)
    out = setup["root"] / "out_pool"
    argv = ["fewshot", setup["eval"], setup["model"], "--out", str(out), *ARGS, "--methods", "zeroshot", "sus_x"]
    assert main([*argv, "--pool", str(pool)]) == 0
    assert f"SuS-X retrieves its support from the 6 images under {pool}" in capsys.readouterr().err
    assert seen and all(len(a[0]) == 6 for a in seen if hasattr(a[0], "__len__"))
    assert main([*argv, "--pool", str(setup["root"] / "nowhere")]) == 2
    assert "--pool: not a folder" in capsys.readouterr().err
