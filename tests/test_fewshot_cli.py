"""``vislang fewshot`` end to end on a tiny untrained model: a world suite with a shift and an
ImageFolder with a train split, the outputs, the zero-shot rows equal to ``vislang eval``'s,
the notes for what is skipped, bad input as one line with exit status 2, and SuS-X on a given
support folder (``--support``: labelled by its subfolders, no retrieval)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from conftest import TINY, export_untrained
from vislang.adapt.fewshot import METHODS, SHOT_FREE, FewshotOptions, plan
from vislang.cli import fewshot as fewshot_command
from vislang.cli import main
from vislang.data.world import COLORS, SHAPES
from vislang.eval.suite import read_suite
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
            [("zeroshot", "0"), ("sus_x", "0")] + [(m, k) for m in METHODS if m not in SHOT_FREE for k in ("1", "2")]
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


def _support(root, shapes=SHAPES, per_class: int = 3) -> None:
    """Generated-looking support images: a shape's subfolder (upper-cased: matched after
    lower-casing) of outlines, a subfolder that is no class, and one file that does not decode."""
    for k, shape in enumerate(shapes):
        (root / shape.upper()).mkdir(parents=True)
        for i in range(per_class):
            image = Image.new("RGB", (32, 32), (255, 255, 255))
            ImageDraw.Draw(image).regular_polygon((16, 16, 6 + 2 * i), 3 + k, fill=(30 * k, 90, 200 - 20 * i))
            image.save(root / shape.upper() / f"{i}.png")
    (root / "unknown_thing").mkdir()
    Image.new("RGB", (32, 32)).save(root / "unknown_thing" / "0.png")
    (root / shapes[0].upper() / "broken.png").write_bytes(b"not a png")


@pytest.fixture(scope="module")
def shape_suite(setup):
    path = setup["root"] / "shape.yaml"
    path.write_text("batch_size: 64\nworkers: 0\ntasks:\n  - {type: zeroshot, n: 30, world_sets: [shape]}\n")
    return str(path)


def test_support_images_carry_their_folder_labels(setup, shape_suite):
    from vislang.api import load_objective
    from vislang.experiment import eval_context

    folder = setup["root"] / "support_plan"
    _support(folder)
    _, tokenizer, cfg = load_objective(setup["model"])
    options = FewshotOptions(n_train=40, n_val=10, n_pool=20, support_per_class=2, support_dir=str(folder),
                             methods=("zeroshot", "sus_x_support"))  # fmt: skip
    warnings = []
    sources, _, notes = plan(read_suite(shape_suite).tasks, eval_context(cfg, tokenizer, 64), options, warnings)
    support = sources["world/shape"].support
    assert support.labels.tolist() == [k for k in range(len(SHAPES)) for _ in range(2)]  # class order, 2 a class
    assert [p.parent.name.lower() for p in support.images.paths] == [SHAPES[k] for k in support.labels]
    assert "broken.png" not in {p.name for p in support.images.paths} and support.unreadable == 1
    assert warnings == [f"--support {folder}: 1 subfolder(s) name no class and are ignored: unknown_thing"]
    assert any("1 unreadable image file(s) skipped (bad image: CIRCLE/broken.png)" in note for note in notes)
    again, _, _ = plan(read_suite(shape_suite).tasks, eval_context(cfg, tokenizer, 64), options)
    assert again["world/shape"].support.images.paths == support.images.paths  # the per-class draw is seeded


def test_sus_x_on_a_given_support_end_to_end(setup, shape_suite, capsys, monkeypatch):
    from vislang.adapt import fewshot

    folder, pool = setup["root"] / "support_cli", setup["root"] / "support_pool"
    _support(folder)
    _folder(pool, 2)
    calls = {"retrieve": 0, "tipx": []}
    real_retrieve, real_search = fewshot.fm.retrieve_support, fewshot.fm.search_tipx

    def retrieve(*args, **kwargs):
        calls["retrieve"] += 1
        return real_retrieve(*args, **kwargs)

    def search(val_x, val_y, prototypes, support, values, *rest, **kwargs):
        calls["tipx"].append((support.shape[0], values.argmax(1).tolist()))
        return real_search(val_x, val_y, prototypes, support, values, *rest, **kwargs)

    monkeypatch.setattr(fewshot.fm, "retrieve_support", retrieve)
    monkeypatch.setattr(fewshot.fm, "search_tipx", search)
    out = setup["root"] / "out_support"
    argv = ["fewshot", shape_suite, setup["model"], "--out", str(out), *ARGS, "--support", str(folder)]
    assert main([*argv, "--methods", "zeroshot"]) == 0  # --support adds its row; nothing is retrieved
    err = capsys.readouterr().err
    assert calls["retrieve"] == 0 and calls["tipx"] == [(12, [k for k in range(6) for _ in range(2)])]
    assert len([line for line in err.splitlines() if "warning" in line and "unknown_thing" in line]) == 1, err
    assert "1 unreadable image file(s) skipped" in err
    rows = list(csv.DictReader((out / "fewshot.csv").open()))
    assert [(r["method"], r["shots"]) for r in rows] == [("zeroshot", "0"), ("sus_x_support", "0")]
    record = json.loads((out / "fewshot.json").read_text())
    assert record["support"]["world/shape"]["per_class"] == dict.fromkeys(SHAPES, 2)
    assert record["support"]["world/shape"]["unreadable"] == 1
    # with --pool too: both SuS-X rows, side by side in every output
    assert main([*argv, "--methods", "zeroshot", "sus_x", "--pool", str(pool)]) == 0
    rows = list(csv.DictReader((out / "fewshot.csv").open()))
    assert [r["method"] for r in rows] == ["zeroshot", "sus_x", "sus_x_support"]
    assert "SuS-X, given support (TIP-X)" in (out / "fewshot.md").read_text()
    assert "1 unreadable files skipped" in (out / "fewshot.md").read_text()
    assert (out / "zeroshot_shape.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert calls["retrieve"] == 1
    assert "sus_x_support" in capsys.readouterr().out


def test_support_folder_errors_are_one_line_exit_2(setup, shape_suite, tmp_path, capsys):
    folder = tmp_path / "support"
    _support(folder, shapes=SHAPES[:-1])  # no subfolder for the last shape
    base = ["fewshot", shape_suite, setup["model"], "--out", str(tmp_path / "o"), *ARGS, "--methods", "zeroshot"]
    cases = [
        (str(folder), f"--support {folder}: no subfolder for the class {SHAPES[-1]!r} of world/shape"),
        (str(tmp_path / "nowhere"), f"--support: not a folder: {tmp_path / 'nowhere'}"),
    ]
    for where, message in cases:
        assert main([*base, "--support", where]) == 2
        err = capsys.readouterr().err
        assert message in err and len([line for line in err.splitlines() if "error" in line]) == 1, err
    assert main([*base, "--methods", "sus_x_support"]) == 2
    assert "--support DIR and the method sus_x_support go together" in capsys.readouterr().err
