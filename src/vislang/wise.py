"""WiSE-FT: evaluate the weight-space path from a zero-shot model to its fine-tuned version.

Fine-tuning raises accuracy on the fine-tuning task and often lowers it under distribution
shift; WiSE-FT takes θ(α) = (1−α)·θ_zs + α·θ_ft and keeps much of both. The two end points must
be one architecture (the same state-dict keys, shapes and dtypes, the same
model section except the fields that only say how training starts or runs, and the same
tokenizer), so that every θ(α) is a model of that architecture.

Every floating-point tensor is interpolated; integer and boolean buffers (BatchNorm's
``num_batches_tracked``, masks) cannot be, and are taken from the fine-tuned model. Each α is
written into one objective in place, so the sweep holds the two end points and one working
model whatever the number of αs. Every α is evaluated with the zero-shot model's evaluation
settings (world, preprocessing, seed): with equal settings α = 0 and α = 1 repeat
``vislang eval --suite`` on each end point exactly.

The best α: among the αs whose in-distribution metric is within ``tolerance`` (one point,
0.01) of the best in-distribution metric of the sweep, the one with the highest mean metric
under shift (a tie goes to the higher in-distribution metric, then to the smaller α). This is
the choice the WiSE-FT paper argues for: robustness bought without giving up the fine-tune's
gain in distribution.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from vislang.api import load_objective
from vislang.checkpoint import write_export
from vislang.errors import ConfigError
from vislang.eval.suite import TaskResult, run_suite
from vislang.eval.tasks import EvalContext, ResultRole, TaskConfig
from vislang.experiment import RunConfig
from vislang.objectives import Objective
from vislang.restore import architecture_difference
from vislang.tokenizers import BPETokenizer

MAX_ALPHAS = 1000  # a sweep evaluates the whole suite once per α
ALPHA_HELP = "write START:STOP:STEP, stop included (0:1:0.1), or a comma list (0,0.5,1)"
# settings that change what an evaluation sees: different values mean α = 1 is evaluated with
# the zero-shot model's settings, not the fine-tuned model's own
EVAL_SETTINGS = (("data", "world"), ("data", "resize_mode"), ("data", "interpolation"), ("train", "seed"))


def parse_alphas(spec: str) -> list[float]:
    """The αs of ``START:STOP:STEP`` (stop included when the steps reach it, to 1e-9) or of a
    comma list, sorted; each in [0, 1], no α twice. A bad spec is one :class:`ConfigError`."""
    parts = spec.strip().split(":") if ":" in spec else spec.strip().split(",")
    try:
        numbers = [float(part) for part in parts]
    except ValueError:
        raise ConfigError(f"--alphas {spec!r}: not numbers; {ALPHA_HELP}") from None
    if ":" in spec:
        if len(numbers) != 3:
            raise ConfigError(f"--alphas {spec!r}: a range is three numbers; {ALPHA_HELP}")
        start, stop, step = numbers
        if not (step > 0 and start <= stop and math.isfinite(stop)):
            raise ConfigError(f"--alphas {spec!r}: a range needs STEP > 0 and START <= STOP; {ALPHA_HELP}")
        count = math.floor((stop - start) / step + 1e-9)
        if count >= MAX_ALPHAS:
            raise ConfigError(f"--alphas {spec!r}: {count + 1} αs, more than {MAX_ALPHAS}; take a larger STEP")
        numbers = [round(start + i * step, 10) for i in range(count + 1)]
    bad = [a for a in numbers if not 0.0 <= a <= 1.0]
    if bad:
        raise ConfigError(f"--alphas {spec!r}: {bad[0]} is outside [0, 1]; {ALPHA_HELP}")
    if len({alpha_name(a) for a in numbers}) != len(numbers):
        raise ConfigError(f"--alphas {spec!r}: an α appears twice; {ALPHA_HELP}")
    return sorted(numbers)


def alpha_name(alpha: float) -> str:
    """α as it appears in folder names and tables (``0.3``, ``1``)."""
    return f"{alpha:.6g}"


def mix(zero_shot: torch.Tensor, finetuned: torch.Tensor, alpha: float) -> torch.Tensor:
    """θ(α) of one tensor: (1−α)·zs + α·ft for floating point (half precision computed in fp32
    and rounded back), the fine-tuned tensor itself for integer and boolean ones."""
    if not zero_shot.is_floating_point():
        return finetuned
    wide = torch.promote_types(zero_shot.dtype, torch.float32)
    mixed = (1.0 - alpha) * zero_shot.to(wide) + alpha * finetuned.to(wide)
    return mixed.to(zero_shot.dtype)


def interpolate(zero_shot: dict[str, torch.Tensor], finetuned: dict[str, torch.Tensor], alpha: float) -> dict:
    """The whole state dict at α (a new dict: for exports and checks; a sweep uses :meth:`WisePair.set_alpha`)."""
    return {key: mix(value, finetuned[key], alpha) for key, value in zero_shot.items()}


def check_same_architecture(zs: dict, ft: dict, zs_name: str, ft_name: str) -> None:
    """One line naming the first key whose presence, shape or dtype differs."""
    for key, value in zs.items():
        if key not in ft:
            raise ConfigError(f"{ft_name}: not the architecture of {zs_name}: it has no {key}")
        other = ft[key]
        if other.shape != value.shape or other.dtype != value.dtype:
            raise ConfigError(
                f"{ft_name}: not the architecture of {zs_name}: {key} is {list(other.shape)} {other.dtype} there, "
                f"{list(value.shape)} {value.dtype} in {zs_name}"
            )
    extra = next((key for key in ft if key not in zs), None)
    if extra is not None:
        raise ConfigError(f"{ft_name}: not the architecture of {zs_name}: {extra} is not in {zs_name}")


def check_compatible(zs: tuple, ft: tuple, zs_name: str, ft_name: str) -> list[str]:
    """Refuse a pair that is not one architecture with one tokenizer; return notes about the
    evaluation settings that differ. ``zs`` and ``ft`` are (state dict, tokenizer, config)."""
    (zs_state, zs_tok, zs_cfg), (ft_state, ft_tok, ft_cfg) = zs, ft
    check_same_architecture(zs_state, ft_state, zs_name, ft_name)
    differs = architecture_difference(zs_cfg, ft_cfg)
    if differs:
        key, theirs, ours = differs
        raise ConfigError(
            f"{ft_name}: not the architecture of {zs_name}: {key} is {ours!r} there, {theirs!r} in {zs_name}"
        )
    if zs_tok.to_json() != ft_tok.to_json():
        what = "vocabularies" if zs_tok.tokenizer.get_vocab() != ft_tok.tokenizer.get_vocab() else "files"
        raise ConfigError(f"{ft_name}: its tokenizer is not {zs_name}'s (their {what} differ)")
    notes = []
    if zs_cfg.objective.kind != ft_cfg.objective.kind:  # a FLYP fine-tune of a CLIP: one weight set, one scoring
        notes.append(
            f"{ft_name} was trained as {ft_cfg.objective.kind}, {zs_name} as {zs_cfg.objective.kind}: every α is "
            f"scored as {zs_name}'s {zs_cfg.objective.kind} objective"
        )
    for section, name in EVAL_SETTINGS:
        if getattr(getattr(zs_cfg, section), name) != getattr(getattr(ft_cfg, section), name):
            notes.append(
                f"{section}.{name} differs between the two models; every α is evaluated with {zs_name}'s, "
                f"so α = 1 need not repeat `vislang eval` on {ft_name}"
            )
    return notes


@dataclass
class WisePair:
    """The two end points' weights (on the CPU) and the one objective every α is written into."""

    objective: Objective
    tokenizer: BPETokenizer
    cfg: RunConfig  # the zero-shot model's: architecture, evaluation settings, exports
    zero_shot: dict[str, torch.Tensor]
    finetuned: dict[str, torch.Tensor]
    notes: list[str]
    alpha: float = 0.0

    @torch.no_grad()
    def set_alpha(self, alpha: float) -> None:
        """Write θ(α) into the objective's own tensors (no second model)."""
        for key, target in self.objective.state_dict().items():
            target.copy_(mix(self.zero_shot[key], self.finetuned[key], alpha))
        self.alpha = alpha


def load_pair(zero_shot: str | Path, finetuned: str | Path, device: str | torch.device = "cpu") -> WisePair:
    """Open both models (anything :func:`vislang.api.load_objective` opens) and check they are one architecture."""
    objective, tokenizer, cfg = load_objective(zero_shot, "cpu")
    ft_objective, ft_tokenizer, ft_cfg = load_objective(finetuned, "cpu")
    zs_state = {key: value.detach().clone() for key, value in objective.state_dict().items()}
    ft_state = {key: value.detach() for key, value in ft_objective.state_dict().items()}
    del ft_objective
    notes = check_compatible(
        (zs_state, tokenizer, cfg), (ft_state, ft_tokenizer, ft_cfg), str(zero_shot), str(finetuned)
    )
    return WisePair(objective.to(device).eval(), tokenizer, cfg, zs_state, ft_state, notes)


def sweep(
    pair: WisePair,
    tasks: list[TaskConfig],
    context: EvalContext,
    alphas: list[float],
    each: Callable[[float, list[TaskResult]], None] | None = None,
) -> list[tuple[float, list[TaskResult]]]:
    """Every α's suite results (``each`` sees them as they come, e.g. to print or write them)."""
    points = []
    for alpha in alphas:
        pair.set_alpha(alpha)
        results = run_suite(pair.objective, tasks, context)
        if each is not None:
            each(alpha, results)
        points.append((alpha, results))
    return points


def export_alpha(pair: WisePair, alpha: float, out: str | Path, source: str | None = None) -> Path:
    """θ(α) as an ordinary vislang export, with the zero-shot model's config and tokenizer."""
    checkpoint = {
        "config": pair.cfg.model_dump(mode="json"),
        "tokenizer": pair.tokenizer.to_json(),
        "model": interpolate(pair.zero_shot, pair.finetuned, alpha),
    }
    return write_export(checkpoint, out, source)


def role_defaults(
    results: list[ResultRole], id_task: str | None, shifts: list[str] | None
) -> tuple[str | None, list[str] | None]:
    """``--id`` and ``--shift`` where not given, from the suite's roles, so a suite that says what
    its tasks are needs no flags: the ID is the first result of a task of role id; the shifts are,
    of every task of role shift, its results that match the ID's name within its task
    (``zeroshot/shape`` -> ``zeroshot_sketch/shape``), or all of them where none does. Left None
    where the suite has no such roles (:func:`choose_tasks` then takes its own defaults)."""
    if id_task is None:
        id_task = next((r.name for r in results if r.role == "id"), None)
    if shifts is None and any(r.role == "shift" for r in results):
        chosen = next((r for r in results if r.name == id_task), None)
        within = chosen.within() if chosen is not None else None
        shifts = []
        for prefix in dict.fromkeys(r.prefix for r in results if r.role == "shift"):
            own = [r for r in results if r.prefix == prefix]
            shifts += [r.name for r in own if r.within() == within] or [r.name for r in own]
        shifts = [name for name in shifts if name != id_task]  # an ID named among the shift tasks
    return id_task, shifts


# -- the table and the figure ----------------------------------------------------------------------


def choose_tasks(names: list[str], id_task: str | None, shifts: list[str] | None) -> tuple[str, list[str]]:
    """(ID result, shift results) by name; by default the first result is ID and every other a
    shift (a suite with roles gives its defaults through :func:`role_defaults` first)."""
    for name in [id_task, *(shifts or [])]:
        if name is not None and name not in names:
            raise ConfigError(f"no suite result named {name!r} (the suite gives: {', '.join(names)})")
    if id_task is None:
        id_task = next((n for n in names if n not in (shifts or [])), None)
    shifts = [n for n in names if n != id_task] if shifts is None else shifts
    if id_task is None or id_task in shifts:
        raise ConfigError(f"the ID task {id_task!r} cannot also be a shift task; name it with --id")
    if not shifts:
        raise ConfigError(f"the suite gives only {id_task!r}: WiSE-FT needs an ID task and at least one shift task")
    return id_task, shifts


@dataclass
class WiseTable:
    """One row per α: the ID metric, the mean over the shifts, and every result's main metric."""

    id_task: str
    shifts: list[str]
    columns: list[str]  # "<result>/<main metric>", in the suite's order
    rows: list[dict[str, float]]  # alpha, id, shift_mean, then the columns
    best: int  # index into rows
    tolerance: float


def _main(result: TaskResult) -> tuple[str, float]:
    key = result.main_metric()
    if key is None:
        raise ConfigError(f"{result.name}: no main metric to compare αs by ({', '.join(result.metrics)})")
    return f"{result.name}/{key}", result.metrics[key]


def _finite(value: float) -> float:
    return value if math.isfinite(value) else -math.inf


def best_index(ids: list[float], shifts: list[float], tolerance: float) -> int:
    """The best α's index: highest mean shift among αs whose ID is within ``tolerance`` of the
    best ID; ties to the higher ID, then to the earlier (smaller) α."""
    top = max(_finite(v) for v in ids)
    near = [i for i, v in enumerate(ids) if _finite(v) >= top - tolerance - 1e-12]
    return max(near, key=lambda i: (_finite(shifts[i]), _finite(ids[i]), -i))


def wise_table(
    points: list[tuple[float, list[TaskResult]]], id_task: str, shifts: list[str], tolerance: float = 0.01
) -> WiseTable:
    """The sweep's table, with the best α chosen (module docstring)."""
    rows, columns = [], []
    for alpha, results in points:
        by_name = {r.name: r for r in results}
        id_value = _main(by_name[id_task])[1]  # one line where a chosen result has no main metric
        shift_values = [_main(by_name[s])[1] for s in shifts]
        mains = dict(_main(r) for r in results if r.main_metric() is not None)
        rows.append({"alpha": alpha, "id": id_value, "shift_mean": sum(shift_values) / len(shifts), **mains})
        columns = columns or list(mains)
    best = best_index([r["id"] for r in rows], [r["shift_mean"] for r in rows], tolerance)
    return WiseTable(id_task, shifts, columns, rows, best, tolerance)


def table_csv(table: WiseTable) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["alpha", "id", "shift_mean", "best", *table.columns])
    writer.writeheader()
    for i, row in enumerate(table.rows):
        writer.writerow({**row, "alpha": alpha_name(row["alpha"]), "best": int(i == table.best)})
    return buffer.getvalue()


def best_rule(table: WiseTable) -> str:
    points = 100 * table.tolerance
    return f"highest mean shift among αs within {points:g} point{'' if points == 1 else 's'} of the best ID"


def table_markdown(table: WiseTable, zero_shot: str, finetuned: str, suite: str) -> str:
    best = table.rows[table.best]
    lines = [
        "# WiSE-FT",
        "",
        f"θ(α) = (1−α)·θ_zs + α·θ_ft with θ_zs `{zero_shot}` (α = 0) and θ_ft `{finetuned}` (α = 1), each α",
        f"evaluated on the suite `{suite}` (its results in `alpha_<α>/`). ID: `{table.id_task}`; shifts:",
        ", ".join(f"`{s}`" for s in table.shifts) + "; *mean shift* is the plain mean of their main metrics.",
        f"Best α = **{alpha_name(best['alpha'])}**: the {best_rule(table)}.",
        "",
        "![WiSE-FT](wise.png)",
        "",
        "| α | ID | mean shift | " + " | ".join(table.columns) + " |",
        "|---:|---:|---:|" + "---:|" * len(table.columns),
    ]
    for i, row in enumerate(table.rows):
        alpha = f"**{alpha_name(row['alpha'])}** (best)" if i == table.best else alpha_name(row["alpha"])
        cells = [
            f"{row['id']:.4f}",
            f"{row['shift_mean']:.4f}",
            *(f"{row.get(c, math.nan):.4f}" for c in table.columns),
        ]
        lines.append(f"| {alpha} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(table: WiseTable, path: Path) -> Path:
    """ID metric (x) against mean shift metric (y), one labelled point per α, the path through
    them, the end points and the best α marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, ys = [r["id"] for r in table.rows], [r["shift_mean"] for r in table.rows]
    fig, ax = plt.subplots(figsize=(6.2, 4.8))
    ax.plot(
        xs, ys, color="#4878a8", marker="o", markersize=4, linewidth=1.2, label="θ(α), each point labelled with its α"
    )
    labels: dict[tuple[float, float], list[str]] = {}  # αs that land on one point share a label
    for row, x, y in zip(table.rows, xs, ys, strict=True):
        labels.setdefault((x, y), []).append(alpha_name(row["alpha"]))
    for (x, y), names in labels.items():
        ax.annotate(", ".join(names), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ends = [(0, "s", "#2a9d3a", "α = {}: zero-shot end"), (-1, "^", "#c44", "α = {}: fine-tuned end")]
    for index, marker, color, label in ends:
        row = table.rows[index]
        ax.scatter([row["id"]], [row["shift_mean"]], marker=marker, s=90, color=color, zorder=3,
                   label=label.format(alpha_name(row["alpha"])))  # fmt: skip
    best = table.rows[table.best]
    ax.scatter([best["id"]], [best["shift_mean"]], marker="*", s=260, facecolor="none", edgecolor="#e0a000",
               linewidth=1.8, zorder=4, label=f"best α = {alpha_name(best['alpha'])}: {best_rule(table)}")  # fmt: skip
    ax.set_xlabel(f"in distribution: {table.id_task}")
    shown = ",\n".join(table.shifts) if len(table.shifts) <= 3 else f"{len(table.shifts)} tasks"
    ax.set_ylabel(f"mean under shift:\n{shown}", fontsize=7)
    ax.set_title("WiSE-FT: (1−α)·zero-shot + α·fine-tuned")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_table(table: WiseTable, out: Path, zero_shot: str, finetuned: str, suite: str) -> list[Path]:
    """``wise.csv``, ``wise.md`` and ``wise.png`` in ``out`` (created)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "wise.csv").write_text(table_csv(table))
    (out / "wise.md").write_text(table_markdown(table, zero_shot, finetuned, suite))
    return [out / "wise.csv", out / "wise.md", plot(table, out / "wise.png")]
