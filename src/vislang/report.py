"""``report.md`` for a run directory: what was trained, curves, what a fine-tune cost, the
final table and what the compositional probes say, written for someone who has not read the code.

The fine-tuning cost compares each task's main metric before training (the step-0 evaluation,
``eval.at_start``) with the final one, grouped by the task's role. Fine-tuning raises the metric
it trains for; the point of measuring the start is the rest of the table: a zero-shot model
fine-tuned on one task can quietly lose what it knew about others (the reason WiSE-FT, LP-FT and
FLYP exist), and a final table alone cannot show that, having nothing to compare with. Everything
here reads the run directory's files (``config.yaml``, ``metrics.jsonl``, ``metrics.json``), not the loop.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from vislang.errors import VislangError
from vislang.eval import TASKS
from vislang.eval.suite import UNBOUNDED_METRICS
from vislang.experiment import EvalConfig
from vislang.files import read_jsonl
from vislang.objectives import OBJECTIVES

PROBE_CHANCE = {"relation": 0.5, "attribute": 0.5, "order": 0.2}
PROBE_WHAT = {
    "relation": "true caption vs. the two objects swapped around the relation",
    "attribute": "true caption vs. the colours exchanged between the objects",
    "order": "true caption vs. 4 shuffles of its words",
}


def read_metrics(path: Path) -> list[dict]:
    """The records of a ``metrics.jsonl``; a torn last line (a run killed mid-write) is left out."""
    return read_jsonl(path)


def _plot(records: list[dict], keys: list[str], path: Path, ylabel: str, title: str) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    drawn = False
    for key in keys:
        points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        if points:
            ax.plot(*zip(*points), marker="o" if len(points) < 30 else None, markersize=3, label=key)
            drawn = True
    if drawn:
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def probe_sentence(metrics: dict[str, float], objective: str = "clip") -> str:
    """What the compositional probes say about the model, in a sentence or two."""
    parts, near = [], []
    for probe, chance in PROBE_CHANCE.items():
        acc = metrics.get(f"compositional/{probe}/acc")
        if acc is None:
            continue
        parts.append(f"{probe} {acc:.2f} (chance {chance:.2f})")
        if acc < chance + 0.1:
            near.append(probe)
    if not parts:
        return ""
    text = "Compositional probes: " + ", ".join(parts) + ". "
    if near:
        like = (
            "like the contrastive models ARO examined, "
            if objective in OBJECTIVES and OBJECTIVES[objective].contrastive
            else ""
        )
        text += (
            f"On {', '.join(near)} the model is at or near chance: {like}"
            "it treats a caption as a bag of words there, knowing which objects and colours are present but not how "
            "they are bound to each other or arranged. Captioning objectives and hard negatives are the known remedies "
            "(see docs/contrastive_vs_captioning.md for what they achieve on the built-in world)."
        )
    else:
        text += "Every probe is clearly above chance: the model uses word order and binding, not only a bag of words."
    return text


def what_was_trained(config: dict) -> str:
    """The report's first paragraph: the objective, data, schedule and towers, from ``config.yaml``."""
    m, v, tt, t = config["model"], config["model"]["vision"], config["model"]["text"], config["train"]
    kinds = [s["kind"] for s in config["data"]["sources"]]
    samples = "labelled images" if "labelled" in kinds else "image–text pairs"
    start = f", starting from `{t['init_from']}`" if t.get("init_from") else ""
    return (
        f"**What was trained.** A `{config['objective']['kind']}` model on the `{', '.join(kinds)}` data{start}, for "
        f"{t['steps']} steps of batch {t['batch_size']} ({t['steps'] * t['batch_size']:,} {samples}), "
        f"{t['precision']}, learning rate {t['lr']} with {t['warmup_steps']} warmup steps and cosine decay. "
        f"Image tower: ViT with a `{v['stem']}` stem, {v['image_size']} px input, patch {v['patch_size']}, "
        f"width {v['width']}, depth {v['depth']}, `{v['pool']}` pooling. Text tower: "
        f"{'causal' if tt['causal'] else 'bidirectional'} transformer, width {tt['width']}, depth {tt['depth']}, "
        f"context {tt['context_length']}, `{tt['pool']}` pooling. Shared embedding: {m['embed_dim']} dimensions."
    )


def _read_run(run_dir: Path) -> tuple[dict, list[dict], dict[str, float]]:
    """(config.yaml, metrics.jsonl's records, metrics.json) of a run directory."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return config, read_metrics(run_dir / "metrics.jsonl"), metrics


def write_report(run_dir: str | Path) -> Path:
    """``report.md`` (and its PNGs) in ``run_dir``, from the files the run left there, so a
    finished run can be reported again without its model."""
    run_dir = Path(run_dir)
    config, records, metrics = _read_run(run_dir)
    train_rows = [r for r in records if "train/loss" in r]
    lines = ["# vislang run report", "", what_was_trained(config)]
    if train_rows:
        last = train_rows[-1]
        lines += [
            "",
            f"Final training loss {last['train/loss']:.3f}; throughput "
            f"{last.get('train/samples_per_s', float('nan')):.0f} samples/s in the last logging window.",
        ]
    if _plot(records, ["train/loss"], run_dir / "loss.png", "loss", "training loss"):
        lines += ["", "![training loss](loss.png)"]
    curve_keys = sorted({k for r in records for k in r if k.endswith(("/top1", "/acc"))})
    if _plot(records, curve_keys, run_dir / "eval.png", "accuracy", "evaluation over training"):
        lines += ["", "![evaluation over training](eval.png)"]
    cost = fine_tuning_cost(config, records, metrics)
    if cost is not None and cost.rows:
        lines += ["", *cost_section(cost)]
    lines += ["", "## Final evaluation", "", "| metric | value |", "|---|---|"]
    lines += [f"| `{k}` | {v:.4f} |" for k, v in metrics.items()]
    sentence = probe_sentence(metrics, config["objective"]["kind"])
    if sentence:
        lines += ["", "## What the compositional probes show", ""]
        lines += [f"- **{p}**: {PROBE_WHAT[p]}." for p in PROBE_CHANCE if f"compositional/{p}/acc" in metrics]
        lines += ["", sentence]
    lines += [
        "",
        "Files: `config.yaml` (the resolved config), `metrics.jsonl` (per-step log), `metrics.json` "
        "(final metrics), `checkpoints/`, `tensorboard/`.",
    ]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def cost_warnings(run_dir: str | Path) -> list[str]:
    """The report's warning lines about the fine-tuning cost (none without a step-0 evaluation),
    for the run's log: someone who reads only log.txt should see them too."""
    cost = fine_tuning_cost(*_read_run(Path(run_dir)))
    return [] if cost is None else cost.warnings


# -- the fine-tuning cost ----------------------------------------------------------------------

# The endings of a task's main metrics (top-1, accuracy, mean R@1, group score, CIDEr).
HEADLINE_ENDINGS = ("top1", "acc", "mean_R@1", "/group", "CIDEr")
ROLE_ORDER = ("id", "shift", "unseen", "other")
ROLE_WHAT = {
    "id": "the fine-tuning task, in distribution",
    "shift": "the same task under distribution shift",
    "unseen": "tasks the fine-tune never trained on",
    "other": "tasks without a role (eval.tasks[].role)",
}


def headline(results: dict[str, float], most: int = 8) -> dict[str, float]:
    """The metrics a console line shows: each task's main ones (top-1, accuracy, mean R@1, group
    score, CIDEr); where a run's tasks have none of those, its first ``most`` metrics."""
    main = {k: v for k, v in results.items() if k.endswith(HEADLINE_ENDINGS)}
    return main or dict(list(results.items())[:most])


@dataclass(frozen=True)
class TaskInfo:
    """What the report needs of one configured task: which metrics are its, and its role."""

    prefix: str
    type: str
    role: str | None


@dataclass(frozen=True)
class CostRow:
    metric: str
    role: str  # id, shift, unseen or other
    type: str  # the task type ("" when the metric matches no configured task)
    before: float
    after: float

    @property
    def change(self) -> float:
        return self.after - self.before


@dataclass
class FineTuningCost:
    rows: list[CostRow]
    warnings: list[str]
    threshold: float
    any_role: bool  # whether some task has a role (else the warning watches zero-shot top-1)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def step_zero(records: list[dict]) -> dict[str, float]:
    """The evaluation logged at step 0, before the first step (later lines of step 0 win)."""
    values: dict[str, float] = {}
    for record in records:
        if record.get("step") == 0:
            values |= {
                k: v for k, v in record.items() if k != "step" and not k.startswith(("train/", "data/")) and _number(v)
            }
    return values


def configured_tasks(config: dict) -> list[TaskInfo]:
    """The run's evaluation tasks as ``config.yaml`` gives them; a task that no longer validates
    (a plug-in type not registered in this process) is left out, its metrics counted as other."""
    raw = (config.get("eval") or {}).get("tasks") or []
    tasks = []
    for entry in raw:
        kind = entry.get("type") if isinstance(entry, dict) else None
        if kind not in TASKS:
            continue
        try:
            task = TASKS[kind].model_validate(entry)
        except (ValidationError, ValueError, VislangError):
            continue
        tasks.append(TaskInfo(task.metric_prefix(), task.type, task.role))
    return tasks


def task_of(metric: str, tasks: list[TaskInfo]) -> TaskInfo | None:
    """The task whose metrics ``metric`` is one of: the longest matching prefix (``zeroshot/pets``
    before ``zeroshot``)."""
    matching = [t for t in tasks if metric.startswith(t.prefix + "/")]
    return max(matching, key=lambda t: len(t.prefix), default=None)


def fine_tuning_cost(config: dict, records: list[dict], final: dict[str, float]) -> FineTuningCost | None:
    """Before/after rows of every main metric of the step-0 evaluation, or None for a run
    without one. ``final``: ``metrics.json`` (a metric missing there: its last logged value)."""
    before = step_zero(records)
    if not before:
        return None
    last = {k: v for r in records if r.get("step", 0) > 0 for k, v in r.items() if k != "step" and _number(v)}
    tasks = configured_tasks(config)
    rows = []
    for metric, value in headline(before).items():
        after = final.get(metric, last.get(metric))
        if not _number(after):
            continue
        task = task_of(metric, tasks)
        role = (task.role if task else None) or "other"
        rows.append(CostRow(metric, role, task.type if task else "", float(value), float(after)))
    eval_section = config.get("eval") or {}
    threshold = float(eval_section.get("max_zeroshot_drop", EvalConfig.model_fields["max_zeroshot_drop"].default))
    any_role = any(t.role is not None for t in tasks)
    cost = FineTuningCost(rows, [], threshold, any_role)
    cost.warnings = drop_warnings(cost)
    return cost


def _watched(row: CostRow, any_role: bool) -> bool:
    """Rows the drop warning watches: role unseen, or with no roles anywhere, zero-shot top-1."""
    if any_role:
        return row.role == "unseen"
    is_zeroshot = row.type == "zeroshot" or (not row.type and row.metric.startswith("zeroshot"))
    return is_zeroshot and row.metric.endswith("/top1")


def drop_warnings(cost: FineTuningCost) -> list[str]:
    """One line (for report.md and log.txt) naming every watched metric that lost more than the threshold."""
    dropped = [r for r in cost.rows if _watched(r, cost.any_role) and r.before - r.after > cost.threshold]
    if not dropped:
        return []
    what = "tasks of role unseen" if cost.any_role else "zero-shot top-1 (no task has a role)"
    named = "; ".join(f"`{r.metric}` {r.before:.4f} → {r.after:.4f} ({_signed(r.change)})" for r in dropped)
    return [f"**Warning:** fine-tuning lost more than {cost.threshold:g} (eval.max_zeroshot_drop) on {what}: {named}"]


def _signed(value: float) -> str:
    """A change with its sign, never ``-0.0000`` (a mean whose change rounds to nothing)."""
    return f"{round(value, 4) + 0.0:+.4f}"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def cost_section(cost: FineTuningCost) -> list[str]:
    """The report's "Fine-tuning cost" section, as markdown lines."""
    left_out = [r.metric for r in cost.rows if r.metric.endswith(UNBOUNDED_METRICS)]
    note = f" (leaving out {', '.join(f'`{m}`' for m in left_out)}: not a fraction)" if left_out else ""
    lines = [
        "## Fine-tuning cost",
        "",
        "Each task's main metric before training (the step-0 evaluation of the starting weights) and after it "
        "(the final evaluation), grouped by what the task is to the fine-tune; a *mean* row averages its role's "
        f"metrics{note}.",
        "",
    ]
    lines += cost.warnings + ([""] if cost.warnings else [])
    lines += ["| role | metric | before | after | change |", "|---|---|---:|---:|---:|"]
    for role in ROLE_ORDER:
        rows = [r for r in cost.rows if r.role == role]
        if not rows:
            continue
        lines += [f"| {role} | `{r.metric}` | {r.before:.4f} | {r.after:.4f} | {_signed(r.change)} |" for r in rows]
        bounded = [r for r in rows if not r.metric.endswith(UNBOUNDED_METRICS)]
        if len(bounded) > 1:
            b, a = _mean([r.before for r in bounded]), _mean([r.after for r in bounded])
            lines.append(
                f"| **{role}** | **mean** of {len(bounded)} | **{b:.4f}** | **{a:.4f}** | **{_signed(a - b)}** |"
            )
    present = [role for role in ROLE_ORDER if any(r.role == role for r in cost.rows)]
    lines += ["", "Roles: " + "; ".join(f"*{role}*: {ROLE_WHAT[role]}" for role in present) + "."]
    return lines
