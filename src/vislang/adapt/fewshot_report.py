"""What ``vislang fewshot`` writes: fewshot.csv (one row per test set, method and shot count),
fewshot.json (the same with every seed's accuracy and chosen hyperparameters), fewshot.md (a
table per test set, mean ± std over seeds) and one PNG per test set (accuracy against shots)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from vislang.adapt.fewshot import SHOT_FREE, FewshotResult, Row

LABELS = {
    "zeroshot": "zero-shot",
    "linear_probe": "linear probe (images)",
    "tip_adapter": "Tip-Adapter",
    "tip_adapter_f": "Tip-Adapter-F",
    "cross_modal": "cross-modal probe",
    "sus_x": "SuS-X (TIP-X)",
    "sus_x_support": "SuS-X, given support (TIP-X)",
}
COLORS = {
    "linear_probe": "#4878a8",
    "tip_adapter": "#d1495b",
    "tip_adapter_f": "#8c2d3c",
    "cross_modal": "#2a9d3a",
    "zeroshot": "#555555",
    "sus_x": "#e0a000",
    "sus_x_support": "#7a4fa0",
}
MARKERS = {"linear_probe": "o", "tip_adapter": "s", "tip_adapter_f": "D", "cross_modal": "^"}


def _tasks(result: FewshotResult) -> list[str]:
    return list(dict.fromkeys(r.task for r in result.rows))


def _methods(result: FewshotResult) -> list[str]:
    return [m for m in result.options.methods if any(r.method == m for r in result.rows)]


def _shots(result: FewshotResult) -> list[int]:
    return sorted({r.shots for r in result.rows if r.shots > 0})


def file_stem(task: str) -> str:
    """A test set's name as a file name (``zeroshot_sketch/shape`` -> ``zeroshot_sketch_shape``)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in task)


def table_csv(result: FewshotResult) -> str:
    """One line per row, every seed's accuracy in ``accs`` (``;``-joined), for spreadsheets and diffs."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["task", "train", "method", "shots", "seeds", "mean", "std", "accs"])
    for r in result.rows:
        accs = ";".join(f"{a:.6f}" for a in r.accs)
        writer.writerow([r.task, r.source, r.method, r.shots, len(r.accs), f"{r.mean:.6f}", f"{r.std:.6f}", accs])
    return buffer.getvalue()


def table_json(result: FewshotResult) -> str:
    """Everything, with each fit's chosen hyperparameters: what explains a row that surprises."""
    rows = [vars(r) | {"mean": r.mean, "std": r.std} for r in result.rows]
    splits = {k: dict(zip(("shot_candidates", "val", "pool"), v, strict=True)) for k, v in result.splits.items()}
    body = {"options": vars(result.options), "notes": result.notes, "warnings": result.warnings, "splits": splits}
    body |= {"support": result.support, "rows": rows}
    return json.dumps(body, indent=1, default=str) + "\n"


def _cell(row: Row | None) -> str:
    if row is None:
        return ""
    return f"{row.mean:.3f}" if len(row.accs) == 1 else f"{row.mean:.3f} ± {row.std:.3f}"


def table_markdown(result: FewshotResult, model: str, suite: str) -> str:
    """A table per test set: methods down, shot counts across (0: no labelled image)."""
    o, shots = result.options, _shots(result)
    lines = [
        "# Few-shot and training-free classifiers",
        "",
        f"Model `{model}`, suite `{suite}`. Top-1 accuracy on each test set, mean ± std (population) over "
        f"{o.seeds} seeded draws of the shots; column 0 uses no labelled image (SuS-X retrieves "
        f"{o.support_per_class} support images per class from an unlabelled pool). Every hyperparameter is chosen "
        "on a labelled validation split of the train split, never on the test set.",
        "",
    ]
    for key, (n_cand, n_val, n_pool) in result.splits.items():
        lines.append(f"- `{key}`: {n_cand} shot candidates, {n_val} validation images, {n_pool} pool images")
    for key, s in result.support.items():
        per_class = ", ".join(f"{c} {n}" for c, n in s["per_class"].items())
        lines.append(f"- `{key}`: given support (`sus_x_support`, no retrieval) from `{s['folder']}`: "
                     f"{s['images']} images ({per_class}), {s['unreadable']} unreadable files skipped")  # fmt: skip
    lines += [f"- note: {note}" for note in result.notes] + [f"- warning: {w}" for w in result.warnings]
    header = "| method | 0 | " + " | ".join(str(k) for k in shots) + " |"
    for task in _tasks(result):
        by = {(r.method, r.shots): r for r in result.rows if r.task == task}
        lines += ["", f"## {task}", "", f"chance {result.chance.get(task, math.nan):.3f}", ""]
        lines += [f"![{task}]({file_stem(task)}.png)", "", header, "|---|" + "---:|" * (len(shots) + 1)]
        for m in _methods(result):
            cells = [_cell(by.get((m, 0)))] + [_cell(by.get((m, k))) for k in shots]
            lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_task(result: FewshotResult, task: str, path: Path) -> Path:
    """Accuracy against shots (log2 axis): a line with std error bars per few-shot method (each
    nudged sideways a little, so that methods with equal numbers stay visible), the shot-free
    methods as horizontal lines. The y axis spans the data; chance is drawn when it falls inside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result.rows if r.task == task]
    shots = _shots(result) or [1]
    fig, ax = plt.subplots(figsize=(6.8, 4.6))
    curves = [m for m in _methods(result) if m not in SHOT_FREE]
    for m in _methods(result):
        mine = sorted((r for r in rows if r.method == m), key=lambda r: r.shots)
        if not mine:
            continue
        if m in SHOT_FREE:
            style = {"zeroshot": "-", "sus_x": "--"}.get(m, "-.")
            ax.axhline(mine[0].mean, color=COLORS.get(m), linestyle=style, linewidth=1.6, zorder=1,
                       label=f"{LABELS.get(m, m)}: {mine[0].mean:.3f} (no labelled images)")  # fmt: skip
            continue
        nudge = 2 ** (0.05 * (curves.index(m) - (len(curves) - 1) / 2))
        ax.errorbar([r.shots * nudge for r in mine], [r.mean for r in mine], yerr=[r.std for r in mine], capsize=3,
                    color=COLORS.get(m), marker=MARKERS.get(m, "o"), markersize=5, linewidth=1.4, zorder=2,
                    linestyle="--" if m == "tip_adapter_f" else "-", label=LABELS.get(m, m))  # fmt: skip
    low = min(r.mean - r.std for r in rows) if rows else 0.0
    high = max(r.mean + r.std for r in rows) if rows else 1.0
    pad = max(0.02, 0.06 * (high - low))
    ax.set_ylim(max(0.0, low - pad), min(1.005, high + pad))
    chance = result.chance.get(task)
    title = task
    if chance is not None and low - pad <= chance:
        ax.axhline(chance, color="#999999", linestyle=":", linewidth=1.0, label=f"chance {chance:.3f}")
    elif chance is not None:
        title += f"  (chance {chance:.3f}, below the axis)"
    ax.set_xscale("log", base=2)
    ax.set_xticks(shots, [str(k) for k in shots])
    ax.minorticks_off()
    ax.set_xlim(min(shots) / 1.4, max(shots) * 1.4)
    ax.set_xlabel("labelled shots per class (log2 axis)")
    ax.set_ylabel("top-1 accuracy (mean ± std over seeds)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best", framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(result: FewshotResult, out: Path, model: str, suite: str) -> list[Path]:
    """fewshot.csv, fewshot.json, fewshot.md and ``<task>.png`` per test set in ``out`` (created)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("fewshot.csv", table_csv(result)), ("fewshot.json", table_json(result)),
                       ("fewshot.md", table_markdown(result, model, suite))):  # fmt: skip
        (out / name).write_text(text)
        written.append(out / name)
    return written + [plot_task(result, task, out / f"{file_stem(task)}.png") for task in _tasks(result)]
