"""What a suite run leaves behind: one JSON per result in CLIP_benchmark's output form,
``summary.md`` / ``summary.csv`` (one row per result and the plain mean of the main metrics,
DataComp's average), per-class accuracy and confusion-matrix PNGs for classification, recall@k
curves for retrieval; and the side-by-side table of several runs (``vislang eval --compare``).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from vislang.errors import DataError
from vislang.eval.suite import UNBOUNDED_METRICS, TaskResult
from vislang.files import read_text

# CLIP_benchmark's task names and metric keys, for the per-result JSON files
BENCHMARK_TASKS = {"zeroshot": "zeroshot_classification", "retrieval": "zeroshot_retrieval"}


def benchmark_metrics(result: TaskResult) -> dict[str, float | None]:
    """A result's metrics under CLIP_benchmark's keys where it has them (acc1, acc5,
    mean_per_class_recall; image_retrieval_recall@k is text→image, text_retrieval_recall@k is
    image→text); other tasks keep vislang's keys."""
    m = result.metrics
    if result.type == "zeroshot":
        out: dict[str, float | None] = {"acc1": m.get("top1"), "acc5": m.get("top5")}
        out["mean_per_class_recall"] = m.get("mean_per_class_recall")
        return out
    if result.type == "retrieval":
        out = {}
        for key, value in m.items():
            direction, _, k = key.partition("/R@")
            if direction == "text_to_image":
                out[f"image_retrieval_recall@{k}"] = value
            elif direction == "image_to_text":
                out[f"text_retrieval_recall@{k}"] = value
            else:
                out[key] = value
        return out
    return dict(m)


def _file_stem(name: str) -> str:
    return name.replace("/", "_")


def write_results(results: list[TaskResult], out: Path, model: str, suite: str) -> None:
    """Every file of a suite run into ``out`` (created)."""
    out.mkdir(parents=True, exist_ok=True)
    for result in results:
        record = {
            "dataset": result.dataset or result.name,
            "result": result.name,
            "model": model,
            "pretrained": model,
            "task": BENCHMARK_TASKS.get(result.type, result.type),
            "metrics": benchmark_metrics(result),
            "language": "en",
            "ties": result.details.get("ties"),
            "vislang_metrics": result.metrics,
            "seconds": round(result.seconds, 3),
            "images_encoded": result.images_encoded,
        }
        text = json.dumps(_finite(record), indent=2, allow_nan=False)
        (out / f"{_file_stem(result.name)}.json").write_text(text + "\n")
    plots = write_plots(results, out)
    (out / "summary.csv").write_text(summary_csv(results))
    (out / "summary.md").write_text(summary_markdown(results, model, suite, plots))


def _finite(value: Any) -> Any:
    """NaN and infinities as null (strict JSON that every reader takes)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def datacomp_average(results: list[TaskResult]) -> float | None:
    """The plain mean of the main metrics that are fractions (CIDEr and the like are left out)."""
    values = [
        r.metrics[k]
        for r in results
        if (k := r.main_metric()) and k.rsplit("/", 1)[-1] not in UNBOUNDED_METRICS and math.isfinite(r.metrics[k])
    ]
    return float(np.mean(values)) if values else None


def summary_rows(results: list[TaskResult]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        key = r.main_metric()
        rows.append(
            {
                "task": r.name,
                "type": r.type,
                "main_metric": key or "",
                "value": r.metrics[key] if key else "",
                "ties": r.details.get("ties") or "",
                "seconds": round(r.seconds, 2),
                "images_encoded": r.images_encoded,
            }
        )
    return rows


def summary_csv(results: list[TaskResult]) -> str:
    buffer = io.StringIO()
    rows = summary_rows(results)
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["task"])
    writer.writeheader()
    writer.writerows(rows)
    average = datacomp_average(results)
    if average is not None:
        writer.writerow({"task": "average", "main_metric": "mean of main metrics", "value": round(average, 6)})
    return buffer.getvalue()


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def summary_markdown(results: list[TaskResult], model: str, suite: str, plots: dict[str, list[str]]) -> str:
    average = datacomp_average(results)
    lines = [
        f"# Evaluation of `{model}`",
        "",
        f"Suite: `{suite}`. One row per result; *main* is the metric that stands for it, and the",
        "average is the plain mean of the main metrics that are fractions (DataComp's average; CIDEr",
        "is left out). Zero-shot and retrieval",
        "rank ties as the *ties* column says: `clip_benchmark` is torch.topk's order (CLIP_benchmark's",
        "numbers exactly), `expected` shares a tie's credit.",
        "",
        "| task | main metric | value | ties | seconds | images encoded |",
        "|---|---|---:|---|---:|---:|",
    ]
    for row in summary_rows(results):
        lines.append(
            f"| {row['task']} | {row['main_metric']} | {_fmt(row['value'])} | {row['ties']} | "
            f"{row['seconds']} | {row['images_encoded']} |"
        )
    if average is not None:
        lines.append(f"| **average** | mean of main metrics | **{average:.4f}** | | | |")
    lines += ["", "## All metrics", ""]
    for r in results:
        lines.append(f"### {r.name}")
        lines.append("")
        lines += [f"- {key}: {_fmt(value)}" for key, value in r.metrics.items()]
        lines += [f"\n![{name}]({name})" for name in plots.get(r.name, [])]
        lines.append("")
    return "\n".join(lines) + "\n"


# -- plots -----------------------------------------------------------------------------------


def write_plots(results: list[TaskResult], out: Path) -> dict[str, list[str]]:
    """The PNGs of every result that has something to draw: {result name: [file names]}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: dict[str, list[str]] = {}
    for r in results:
        kind, stem = r.details.get("kind"), _file_stem(r.name)
        if kind == "classification" and r.details.get("predictions") is not None:
            made[r.name] = [
                _per_class(plt, r, out / f"{stem}_per_class.png"),
                _confusion(plt, r, out / f"{stem}_confusion.png"),
            ]
        elif kind == "retrieval" and r.details.get("recalls"):
            made[r.name] = [_recall_curve(plt, r, out / f"{stem}_recall.png")]
    return made


def class_accuracy(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """Recall of each class (NaN for a class with no test image)."""
    out = np.full(n_classes, np.nan)
    for c in range(n_classes):
        chosen = labels == c
        if chosen.any():
            out[c] = float((predictions[chosen] == c).mean())
    return out


def _per_class(plt, r: TaskResult, path: Path, most: int = 40) -> str:
    names = r.details["classnames"]
    labels, preds = np.asarray(r.details["labels"]), np.asarray(r.details["predictions"])
    accuracy = class_accuracy(labels, preds, len(names))
    order = [i for i in np.argsort(accuracy) if np.isfinite(accuracy[i])]
    if len(order) > most:  # the worst and the best classes
        order = order[: most // 2] + order[-most // 2 :]
    counts = np.bincount(labels, minlength=len(names))
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(order) + 1.4))
    ax.barh(range(len(order)), accuracy[order], color="#4878a8")
    for row, c in enumerate(order):
        ax.text(min(accuracy[c], 0.82) + 0.01, row, f"{accuracy[c]:.2f} (n={counts[c]})", va="center", fontsize=7)
    overall = float((labels == preds).mean())
    ax.axvline(overall, color="#c44", linestyle="--", linewidth=1, label=f"all images {overall:.2f}")
    ax.axvline(1 / len(names), color="#888", linestyle=":", linewidth=1, label=f"chance {1 / len(names):.2f}")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_yticks(range(len(order)), [names[i] for i in order], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy (recall of the class)")
    shown = "" if len(order) == len(names) else f", worst and best {len(order)} of {len(names)}"
    ax.set_title(f"{r.name}: per-class accuracy{shown}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _confusion(plt, r: TaskResult, path: Path, most: int = 30) -> str:
    names = r.details["classnames"]
    labels, preds = np.asarray(r.details["labels"]), np.asarray(r.details["predictions"])
    n = len(names)
    matrix = np.zeros((n, n))
    np.add.at(matrix, (labels, preds), 1)
    rows = matrix.sum(axis=1, keepdims=True)
    matrix = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    shown = np.arange(n)
    if n > most:  # the classes most often confused
        shown = np.sort(np.argsort(-(1 - np.diag(matrix)) * (rows[:, 0] > 0))[:most])
        matrix = matrix[np.ix_(shown, shown)]
    fig, ax = plt.subplots(figsize=(0.3 * len(shown) + 3, 0.3 * len(shown) + 2.5))
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    if len(shown) <= 12:  # small enough to read every cell
        for (row, col), value in np.ndenumerate(matrix):
            if value >= 0.005:
                ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if value > 0.6 else "black")  # fmt: skip
    ticks = [names[i] for i in shown]
    ax.set_xticks(range(len(shown)), ticks, rotation=90, fontsize=7)
    ax.set_yticks(range(len(shown)), ticks, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    subset = "" if len(shown) == n else f" ({len(shown)} most confused of {n} classes)"
    ax.set_title(f"{r.name}: confusion, rows sum to 1{subset}", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _recall_curve(plt, r: TaskResult, path: Path) -> str:
    recalls, ks = r.details["recalls"], r.details["ks"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for direction, label in (("text_to_image", "text → image"), ("image_to_text", "image → text")):
        ax.plot(ks, [recalls[f"{direction}/R@{k}"] for k in ks], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("k")
    ax.set_ylabel("Recall@k")
    ax.set_title(f"{r.name}: recall@k")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


# -- several runs side by side ---------------------------------------------------------------------


def read_summary(directory: Path) -> dict[str, tuple[str, float]]:
    """{task: (main metric, value)} of a suite run's ``summary.csv``."""
    path = directory / "summary.csv"
    if not path.is_file():
        raise DataError(f"{directory}: no summary.csv (is it a `vislang eval --suite ... --out` folder?)")
    out = {}
    for line, row in enumerate(csv.DictReader(io.StringIO(read_text(path))), start=2):
        try:
            out[row["task"]] = (row["main_metric"], float(row["value"]) if row["value"] else math.nan)
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path}:{line}: not a summary row (task, main_metric, value)") from None
    return out


def compare_markdown(directories: list[Path]) -> str:
    """One row per task, one column per run (the main metric), the average last."""
    summaries = [read_summary(d) for d in directories]
    tasks = [t for t in dict.fromkeys(t for s in summaries for t in s) if t != "average"] + ["average"]
    head = "| task | main metric | " + " | ".join(f"`{d}`" for d in directories) + " |"
    lines = [head, "|---|---|" + "---:|" * len(directories)]
    for task in tasks:
        metric = next((s[task][0] for s in summaries if task in s), "")
        cells = [f"{s[task][1]:.4f}" if task in s and math.isfinite(s[task][1]) else "–" for s in summaries]
        lines.append(f"| {task} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
