"""``vislang wise``: the WiSE-FT sweep reproduces both end points' own suite evaluations exactly,
interpolates by the formula, exports a loadable model, and refuses bad input in one line."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import TINY, export_untrained
from vislang.cli import main
from vislang.data.world import COLORS, SHAPES
from vislang.errors import ConfigError
from vislang.experiment import build_config
from vislang.tokenizers import BPETokenizer
from vislang.wise import (
    best_index,
    check_compatible,
    choose_tasks,
    interpolate,
    load_pair,
    mix,
    parse_alphas,
)

TEXTS = [f"a photo of a {c} {s}" for c in COLORS for s in SHAPES] * 10 + ["there is a picture of something"] * 10
SUITE = "batch_size: 64\nworkers: 0\ntasks:\n  - {type: zeroshot, n: 40}\n  - {type: retrieval, n: 20}\n"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny models of one architecture (different seeds), one of another, and a suite file."""
    root = tmp_path_factory.mktemp("wise")
    cfg = build_config({}, TINY)
    paths = {}
    for name, seed in (("zs", 0), ("ft", 1)):
        torch.manual_seed(seed)
        paths[name] = export_untrained(cfg, TEXTS, root / name)
    # the fine-tuned end's BatchNorm counters differ, to show where integer buffers come from
    weights = root / "ft" / "model.safetensors"
    state = load_file(weights)
    state.update({k: torch.tensor(7) for k in state if k.endswith("num_batches_tracked")})
    save_file(state, weights)
    paths["wide"] = export_untrained(build_config({}, [*TINY, "model.vision.width=64"]), TEXTS, root / "wide")
    (root / "suite.yaml").write_text(SUITE)
    paths["suite"], paths["root"] = str(root / "suite.yaml"), root
    return paths


def _suite_metrics(folder) -> dict[str, dict[str, float]]:
    """{result file: vislang's metrics} of a suite result folder."""
    return {p.name: json.loads(p.read_text())["vislang_metrics"] for p in sorted(folder.glob("*.json"))}


def test_end_points_repeat_their_own_evaluation_and_the_table_is_written(models, capsys, monkeypatch):
    import vislang.eval.suite_report

    # the per-result PNGs are suite_report's (tested there) and the slowest part here: left out
    monkeypatch.setattr(vislang.eval.suite_report, "write_plots", lambda results, out: {})
    root = models["root"]
    out, exported = root / "sweep", root / "exported"
    argv = ["wise", models["zs"], models["ft"], "--suite", models["suite"], "--alphas", "0,0.3,1"]
    assert main([*argv, "--out", str(out), "--quiet", "--export-alpha", "0.3", "--export-out", str(exported)]) == 0
    for name, alpha in (("zs", "0"), ("ft", "1")):
        assert (
            main(["eval", models[name], "--suite", models["suite"], "--out", str(root / f"eval_{name}"), "--quiet"])
            == 0
        )
        own, swept = _suite_metrics(root / f"eval_{name}"), _suite_metrics(out / f"alpha_{alpha}")
        assert len(own) == 5 and own == swept  # every metric of every result, exactly
    assert _suite_metrics(out / "alpha_0") != _suite_metrics(out / "alpha_1")  # the end points do differ
    rows = list(csv.DictReader((out / "wise.csv").open()))
    assert [r["alpha"] for r in rows] == ["0", "0.3", "1"]
    for row, alpha in zip(rows, ("0", "0.3", "1"), strict=True):
        metrics = _suite_metrics(out / f"alpha_{alpha}")
        assert float(row["id"]) == metrics["zeroshot_shape.json"]["top1"] == float(row["zeroshot/shape/top1"])
        shifts = [
            metrics[f"{n}.json"]["top1"] for n in ("zeroshot_color", "zeroshot_shape_unseen", "zeroshot_color_unseen")
        ]
        shifts.append(metrics["retrieval.json"]["mean_R@1"])
        assert math.isclose(float(row["shift_mean"]), sum(shifts) / 4, rel_tol=1e-12)
    assert sum(int(r["best"]) for r in rows) == 1
    assert (out / "wise.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wise.png" in (out / "wise.md").read_text()
    assert (exported / "model.safetensors").is_file()
    assert "best α =" in capsys.readouterr().out


def test_weights_follow_the_formula_and_the_export_loads(models):
    import vislang

    pair = load_pair(models["zs"], models["ft"])
    zs, ft = load_file(f"{models['zs']}/model.safetensors"), load_file(f"{models['ft']}/model.safetensors")
    pair.set_alpha(0.3)
    state = pair.objective.state_dict()
    assert set(state) == set(zs)
    counters = [k for k in zs if k.endswith("num_batches_tracked")]
    assert counters and all(torch.equal(state[k], ft[k]) and int(ft[k]) == 7 for k in counters)
    for key in set(zs) - set(counters):
        assert torch.equal(state[key], (1 - 0.3) * zs[key] + 0.3 * ft[key]), key
    assert not torch.equal(state["model.vision.pos_embed"], zs["model.vision.pos_embed"])
    pair.set_alpha(0.0)
    assert all(torch.equal(state[k], zs[k]) for k in set(zs) - set(counters))  # back at the zero-shot end
    pair.set_alpha(0.3)

    exported = models["root"] / "exported_direct"
    assert main(["wise", models["zs"], models["ft"], "--export-alpha", "0.3", "--export-out", str(exported)]) == 0
    model, tokenizer, _ = vislang.load(exported)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = tokenizer(["a red circle", "a blue star above a green square"])
    with torch.no_grad():
        assert torch.equal(model.encode_image(images), pair.objective.model.encode_image(images))
        assert torch.equal(model.encode_text(tokens), pair.objective.model.encode_text(tokens))


def test_integer_tensors_come_from_the_finetuned_model():
    zs, ft = {"w": torch.ones(3), "n": torch.tensor(2)}, {"w": torch.zeros(3), "n": torch.tensor(9)}
    mixed = interpolate(zs, ft, 0.25)
    assert torch.equal(mixed["w"], torch.full((3,), 0.75)) and int(mixed["n"]) == 9
    half = mix(torch.ones(2, dtype=torch.bfloat16), torch.zeros(2, dtype=torch.bfloat16), 0.5)
    assert half.dtype == torch.bfloat16 and torch.equal(half.float(), torch.full((2,), 0.5))


def test_alpha_specs():
    alphas = parse_alphas("0:1:0.1")
    assert len(alphas) == 11 and alphas[0] == 0.0 and alphas[3] == 0.3 and alphas[-1] == 1.0
    assert parse_alphas("0:1:0.3") == [0.0, 0.3, 0.6, 0.9]
    assert parse_alphas("0:0.3:0.1") == [0.0, 0.1, 0.2, 0.3]
    assert parse_alphas("1, 0.5,0") == [0.0, 0.5, 1.0]
    for bad in ("0:1", "1:0:0.1", "0:1:0", "0:1:-0.1", "a,b", "0,1.5", "nan", "0,0.0", "0:inf:0.1", "0:1:1e-9", ""):
        with pytest.raises(ConfigError) as error:
            parse_alphas(bad)
        assert "\n" not in str(error.value)


def test_best_alpha_rule():
    ids = [0.50, 0.70, 0.80, 0.805, 0.81]
    shifts = [0.60, 0.62, 0.58, 0.61, 0.40]
    # within 1 point of the best ID (0.81): indices 2, 3, 4; the highest shift of those is 3
    assert best_index(ids, shifts, 0.01) == 3
    assert best_index(ids, shifts, 0.0) == 4
    assert best_index(ids, shifts, 1.0) == 1
    assert best_index([0.8, 0.8], [0.5, 0.5], 0.01) == 0  # a tie: the smaller α


def test_task_choice():
    names = ["zeroshot/shape", "zeroshot_sketch/shape", "zeroshot_texture/shape"]
    assert choose_tasks(names, None, None) == ("zeroshot/shape", names[1:])
    assert choose_tasks(names, "zeroshot_sketch/shape", None) == (names[1], [names[0], names[2]])
    assert choose_tasks(names, None, [names[2]]) == (names[0], [names[2]])
    for id_task, shifts in (("nope", None), (None, ["zeroshot/nope"]), (names[0], [names[0]])):
        with pytest.raises(ConfigError):
            choose_tasks(names, id_task, shifts)
    with pytest.raises(ConfigError, match="at least one shift"):
        choose_tasks(names[:1], None, None)


def test_configs_and_tokenizers_must_match(models):
    pair = load_pair(models["zs"], models["ft"])
    state, tokenizer, cfg = pair.zero_shot, pair.tokenizer, pair.cfg
    heads = build_config({}, [*TINY, "model.vision.heads=4"])  # the same tensors, another computation
    with pytest.raises(ConfigError, match=r"model\.vision\.heads is 4 there, 2 in"):
        check_compatible((state, tokenizer, cfg), (state, tokenizer, heads), "zs", "ft")
    locked = build_config({}, [*TINY, "model.vision.lock=true", "model.vision.mask_ratio=0.5"])
    assert check_compatible((state, tokenizer, cfg), (state, tokenizer, locked), "zs", "ft") == []
    other = BPETokenizer.train(["an entirely different corpus of words"] * 20 + TEXTS[:5], 300, 24)
    with pytest.raises(ConfigError, match="tokenizer"):
        check_compatible((state, tokenizer, cfg), (state, other, cfg), "zs", "ft")
    reseeded = build_config({}, [*TINY, "train.seed=5"])
    notes = check_compatible((state, tokenizer, cfg), (state, tokenizer, reseeded), "zs", "ft")
    assert len(notes) == 1 and "train.seed" in notes[0]


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vislang.cli", "wise", *argv], capture_output=True, text=True)


@pytest.mark.parametrize("case", ["architecture", "alphas"])
def test_bad_input_is_one_line_exit_2(models, case):
    out = str(models["root"] / f"bad_{case}")
    if case == "architecture":
        done = _cli(models["zs"], models["wide"], "--suite", models["suite"], "--out", out)
        expected = "not the architecture of"
    else:
        done = _cli(models["zs"], models["ft"], "--suite", models["suite"], "--out", out, "--alphas", "0:1:0")
        expected = "--alphas"
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vislang: error:") and expected in lines[0], done.stderr


def test_unknown_task_and_missing_model(models, capsys):
    out = str(models["root"] / "bad_task")
    assert main(["wise", models["zs"], models["ft"], "--suite", models["suite"], "--out", out, "--id", "nope"]) == 2
    assert "no suite result named 'nope'" in capsys.readouterr().err
    assert main(["wise", models["zs"], str(models["root"] / "missing"), "--suite", models["suite"], "--out", out]) == 2
    assert "not found" in capsys.readouterr().err
