"""What a fine-tune cost: the loop evaluates the starting weights at step 0 (once, a resume does
not repeat it), report.md's "Fine-tuning cost" table holds exactly the logged numbers grouped by
role, the drop warning fires only above eval.max_zeroshot_drop (in report.md and log.txt alike),
and ``vislang wise`` takes its ID and shift tasks from a suite's roles."""

from __future__ import annotations

import json
import re

import pytest

import vislang.train.loop as loop
from conftest import TINY, export_untrained
from vislang.eval.suite import read_suite
from vislang.eval.tasks import ResultRole, result_roles
from vislang.experiment import build_config, eval_context, to_yaml
from vislang.files import read_jsonl
from vislang.report import cost_warnings, write_report
from vislang.tokenizers import BPETokenizer
from vislang.wise import choose_tasks, role_defaults

TEXTS = ["a red square", "a blue circle", "a green triangle above a red star"] * 20
TASKS = "eval.tasks=[{type: zeroshot, n: 20, role: id}, {type: compositional, n: 10, role: unseen}]"
ROW = re.compile(r"^\| (\w+) \| `([^`]+)` \| ([-\d.]+) \| ([-\d.]+) \| ([-+\d.]+) \|$")


def _rows(report: str) -> dict[str, tuple[str, float, float, float]]:
    """{metric: (role, before, after, change)} of the report's fine-tuning cost table."""
    return {
        m[2]: (m[1], float(m[3]), float(m[4]), float(m[5])) for line in report.splitlines() if (m := ROW.match(line))
    }


def _evaluations(run_dir) -> list[dict]:
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if any(k.startswith("zeroshot/") for k in r)]


def test_a_fine_tune_evaluates_at_step_0_once_and_reports_the_cost(tmp_path, monkeypatch):
    start = export_untrained(build_config({}, TINY), TEXTS, tmp_path / "start")
    overrides = [*TINY, TASKS, "train.steps=4", "train.eval_every=2", "train.checkpoint_every=2"]
    cfg = build_config({}, [*overrides, f"train.init_from={start}", "eval.max_zeroshot_drop=0"])
    real = loop.optimizer_step

    def stops_before_step_3(run, batch, step):
        if step == 2:
            raise RuntimeError("stopped")
        return real(run, batch, step)

    monkeypatch.setattr(loop, "optimizer_step", stops_before_step_3)
    with pytest.raises(RuntimeError, match="stopped"):
        loop.train(cfg, tmp_path / "run", quiet=True)
    assert [r["step"] for r in _evaluations(tmp_path / "run")] == [0, 2]
    monkeypatch.setattr(loop, "optimizer_step", real)
    loop.train(cfg, tmp_path / "run", resume=True, quiet=True)
    run = tmp_path / "run"
    evaluations = _evaluations(run)
    assert [r["step"] for r in evaluations] == [0, 2, 4]  # step 0 once, not again on resume
    before, after = evaluations[0], evaluations[-1]
    report = (run / "report.md").read_text()
    assert "## Fine-tuning cost" in report and f"starting from `{start}`" in report
    rows = _rows(report)
    assert set(rows) == {k for k in before if k.endswith(("/top1", "/acc"))}
    for metric, (role, was, now, change) in rows.items():
        assert role == ("id" if metric.startswith("zeroshot/") else "unseen")
        assert was == pytest.approx(before[metric], abs=5e-5) and now == pytest.approx(after[metric], abs=5e-5)
        assert change == pytest.approx(after[metric] - before[metric], abs=1e-4)
    # threshold 0: any loss on an unseen task warns; the log carries the report's own line
    dropped = [m for m, (role, was, now, _) in rows.items() if role == "unseen" and now < was]
    warnings = [line for line in report.splitlines() if line.startswith("**Warning:**")]
    assert len(warnings) == (1 if dropped else 0) and all(m in warnings[0] for m in dropped)
    log = (run / "log.txt").read_text().splitlines()
    assert [line for line in log if line.startswith("**Warning:**")] == warnings


def test_at_start_defaults_to_fine_tuning_only():
    plain = build_config({}, TINY)
    assert not plain.eval.evaluates_at_start(plain.train)
    tuned = build_config({}, [*TINY, "train.init_from=somewhere"])
    assert tuned.eval.evaluates_at_start(tuned.train)
    off = build_config({}, [*TINY, "train.init_from=somewhere", "eval.at_start=false"])
    assert not off.eval.evaluates_at_start(off.train)
    on = build_config({}, [*TINY, "eval.at_start=true"])
    assert on.eval.evaluates_at_start(on.train)


# -- report.md from run files written by hand ------------------------------------------------

START = {"zeroshot/shape/top1": 0.30, "zeroshot/color/top1": 0.80, "zeroshot_sketch/shape/top1": 0.25}
START |= {"compositional/relation/acc": 0.60, "retrieval/mean_R@1": 0.50, "zeroshot/shape/mean_per_class_recall": 0.3}


def _run_dir(tmp_path, tasks: str, end: dict[str, float], extra: tuple[str, ...] = ()):
    """A run directory as the loop leaves it: config.yaml, metrics.jsonl (step 0, training lines,
    the final evaluation), metrics.json."""
    run = tmp_path / "run"
    run.mkdir()
    cfg = build_config({}, [*TINY, f"eval.tasks={tasks}", "train.steps=4", *extra])
    (run / "config.yaml").write_text(to_yaml(cfg))
    records = [{"step": 0, **START}, {"step": 2, "train/loss": 3.0}, {"step": 4, "train/loss": 2.5, **end}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run / "metrics.json").write_text(json.dumps({**end, "data/skipped/bad_image": 0.0}))
    return run


ROLES = (
    "[{type: zeroshot, n: 20, role: id}, {type: zeroshot, rendering: sketch, role: shift}, "
    "{type: compositional, role: unseen}, {type: retrieval}]"
)


@pytest.mark.parametrize("drop, threshold, warned", [(0.03, None, True), (0.01, None, False), (0.03, "0.05", False)])
def test_cost_table_and_warning_threshold_with_roles(tmp_path, drop, threshold, warned):
    end = {"zeroshot/shape/top1": 0.90, "zeroshot/color/top1": 0.50, "zeroshot_sketch/shape/top1": 0.45}
    end |= {"compositional/relation/acc": 0.60 - drop, "retrieval/mean_R@1": 0.40}
    end["zeroshot/shape/mean_per_class_recall"] = 0.9
    extra = () if threshold is None else (f"eval.max_zeroshot_drop={threshold}",)
    run = _run_dir(tmp_path, ROLES, end, extra)
    report = write_report(run).read_text()
    rows = _rows(report)
    assert rows == {
        m: (role, START[m], end[m], pytest.approx(end[m] - START[m], abs=1e-4))
        for m, role in [
            ("zeroshot/shape/top1", "id"),
            ("zeroshot/color/top1", "id"),
            ("zeroshot_sketch/shape/top1", "shift"),
            ("compositional/relation/acc", "unseen"),
            ("retrieval/mean_R@1", "other"),
        ]
    }
    assert "| **id** | **mean** of 2 | **0.5500** | **0.7000** | **+0.1500** |" in report
    order = [report.index(f"| {role} |") for role in ("id", "shift", "unseen", "other")]
    assert order == sorted(order) and report.index("## Fine-tuning cost") < report.index("## Final evaluation")
    warnings = [line for line in report.splitlines() if line.startswith("**Warning:**")]
    assert cost_warnings(run) == warnings
    if warned:  # the id task's colour fell 0.30 too, but only unseen tasks are watched when roles exist
        assert len(warnings) == 1 and "compositional/relation/acc" in warnings[0] and "0.6000" in warnings[0]
        assert "zeroshot/color" not in warnings[0] and f"{0.60 - drop:.4f}" in warnings[0]
    else:
        assert warnings == []


def test_without_roles_zero_shot_top1_is_watched(tmp_path):
    end = dict(START) | {"zeroshot/color/top1": 0.70, "compositional/relation/acc": 0.10}
    run = _run_dir(tmp_path, "[{type: zeroshot, n: 20}, {type: compositional}, {type: retrieval}]", end)
    report = write_report(run).read_text()
    (warning,) = [line for line in report.splitlines() if line.startswith("**Warning:**")]
    assert "zeroshot/color/top1" in warning and "0.8000 → 0.7000" in warning and "compositional" not in warning
    assert {role for role, *_ in _rows(report).values()} == {"other"}


def test_no_step_0_evaluation_no_cost_section(tmp_path):
    run = _run_dir(tmp_path, ROLES, dict(START))
    lines = (run / "metrics.jsonl").read_text().splitlines()[1:]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert "Fine-tuning cost" not in write_report(run).read_text() and cost_warnings(run) == []


# -- vislang wise: ID and shifts from the suite's roles ------------------------------------------


def test_wise_takes_id_and_shifts_from_the_suite_roles():
    sizes = [f"tasks.{i}.n=4" for i in range(4)]
    suite = read_suite("world_shift", sizes)
    cfg = build_config({}, TINY)
    context = eval_context(cfg, BPETokenizer.train(TEXTS, 300, 24), batch_size=8)
    results = result_roles(suite.tasks, context)
    names = [r.name for r in results]
    assert "zeroshot/shape" in names and "zeroshot_palette/color_unseen" in names  # metric names unchanged
    shape = ["zeroshot_sketch/shape", "zeroshot_textured/shape", "zeroshot_palette/shape"]
    assert choose_tasks(names, *role_defaults(results, None, None)) == ("zeroshot/shape", shape)
    colour = [s.replace("shape", "color") for s in shape]
    assert choose_tasks(names, *role_defaults(results, "zeroshot/color", None)) == ("zeroshot/color", colour)
    assert role_defaults(results, None, ["zeroshot_sketch/shape"]) == ("zeroshot/shape", ["zeroshot_sketch/shape"])
    plain = [ResultRole(r.name, r.prefix, None) for r in results]  # no roles: the old defaults stand
    assert role_defaults(plain, None, None) == (None, None)
    one = [
        ResultRole("zeroshot/pets", "zeroshot/pets", "id"),
        ResultRole("zeroshot/pets_sketch", "zeroshot/pets_sketch", "shift"),
    ]
    assert role_defaults(one, None, None) == ("zeroshot/pets", ["zeroshot/pets_sketch"])
