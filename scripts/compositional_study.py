"""The contrastive-vs-captioning study on the built-in world (docs/contrastive_vs_captioning.md).

    python scripts/compositional_study.py run --out runs/study      # trains the configs, two at a time
    python scripts/compositional_study.py report --runs runs/study  # table (Markdown) + probe curves PNG

``run`` trains configs/compositional/{clip,clip_hardneg,cap,cappa,coca,clip_swapneg}.yaml, then
the follow-ups that start from the Cap run's image tower, with ``vislang train`` in ``--lanes``
parallel lanes of one thread each (on a 2-core machine two one-thread runs train faster together
than two two-thread runs one after another) and records each run's wall time in ``times.json``;
``report`` reads the run directories.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RUNS = ("clip", "clip_hardneg", "cap", "cappa", "coca", "clip_swapneg")
# Follow-ups on the Cap run's image tower (model.vision.init_from), started once `cap` is done:
# locked (LiT, as CapPa evaluates its encoders) or fine-tuned, each with and without hard negatives.
FOLLOW_UPS = ("lit_cap", "lit_cap_hardneg", "clip_from_cap", "clip_hardneg_from_cap")
# Controls of the first study (either wording, see the doc), shown when present; not trained by `run`.
CONTROLS = ("clip_hardneg_map", "clip_map")
PROBES = ("relation", "attribute", "order")
COLUMNS = {
    "shape": "zeroshot/shape/top1",
    "colour": "zeroshot/color/top1",
    "shape (held-out pairs)": "zeroshot/shape_unseen/top1",
    "T→I R@1": "retrieval/text_to_image/R@1",
    "I→T R@1": "retrieval/image_to_text/R@1",
    "relation": "compositional/relation/acc",
    "attribute": "compositional/attribute/acc",
    "order": "compositional/order/acc",
}


def run(out: Path, configs: Path, lanes: int, only: list[str] | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    times_file = out / "times.json"
    times = json.loads(times_file.read_text()) if times_file.exists() else {}
    threads = max(1, (os.cpu_count() or 1) // lanes)
    waiting, running, failed = [n for n in RUNS + FOLLOW_UPS if not only or n in only], {}, set()
    while waiting or running:
        while len(running) < lanes:
            cap_pending = "cap" in waiting or "cap" in running
            ready = [n for n in waiting if n not in FOLLOW_UPS or not cap_pending]
            if not ready:
                break
            name = ready[0]
            waiting.remove(name)
            if name in FOLLOW_UPS and ("cap" in failed or not (out / "cap" / "checkpoints").is_dir()):
                print(f"{name} skipped: it starts from {out / 'cap'}, which has no checkpoint", file=sys.stderr)
                continue
            command = [
                sys.executable,
                "-c",
                "from vislang.cli import main; raise SystemExit(main())",
                "train",
                str(configs / f"{name}.yaml"),
                "--out",
                str(out / name),
                "--quiet",
            ]
            command += ["--set", f"train.threads={threads}"]
            if name in FOLLOW_UPS:
                command += ["--set", f"model.vision.init_from={out / 'cap'}"]
            log = (out / f"{name}.log").open("w")
            running[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log, time.perf_counter())
        time.sleep(5)
        for name, (process, log, start) in list(running.items()):
            if process.poll() is None:
                continue
            del running[name]
            log.close()
            if process.returncode:
                print(f"{name} failed (exit {process.returncode}); see {out / name}.log", file=sys.stderr)
                failed.add(name)
                continue
            times[name] = time.perf_counter() - start
            times_file.write_text(json.dumps(times, indent=2) + "\n")


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def report(runs: Path, png: Path) -> None:
    times = json.loads((runs / "times.json").read_text()) if (runs / "times.json").exists() else {}
    present = [name for name in RUNS + CONTROLS + FOLLOW_UPS if (runs / name / "metrics.json").exists()]
    header = "| run | " + " | ".join(COLUMNS) + " | train wall time |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 2)]
    for name in present:
        metrics = json.loads((runs / name / "metrics.json").read_text())
        cells = [f"{metrics.get(key, float('nan')):.3f}" for key in COLUMNS.values()]
        wall = f"{times[name] / 60:.1f} min" if name in times else "?"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {wall} |")
    print("\n".join(lines))
    plot_curves(runs, [n for n in present if n not in FOLLOW_UPS], png)
    if follow_ups := [n for n in present if n in FOLLOW_UPS]:
        references = [n for n in ("clip", "clip_hardneg", "cap") if n in present]
        plot_curves(runs, references + follow_ups, png.with_name(f"{png.stem}_cap_tower.png"))


def plot_curves(runs: Path, names: list[str], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["zeroshot/shape/top1"] + [f"compositional/{p}/acc" for p in PROBES]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4))
    for ax, key in zip(axes, keys):
        for name in names:
            points = [(r["step"], r[key]) for r in _records(runs / name) if key in r]
            ax.plot(*zip(*points), marker="o", markersize=3, label=name)
        chance = {"relation": 0.5, "attribute": 0.5, "order": 0.2}.get(key.split("/")[1])
        if chance:
            ax.axhline(chance, color="grey", linestyle=":", linewidth=1)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run")
    p.add_argument("--out", type=Path, default=Path("runs/study"))
    p.add_argument("--configs", type=Path, default=Path("configs/compositional"))
    p.add_argument("--lanes", type=int, default=2, help="runs trained at once, each with cores/lanes threads")
    p.add_argument("--only", nargs="+", choices=RUNS + FOLLOW_UPS, help="train these runs only")
    p = sub.add_parser("report")
    p.add_argument("--runs", type=Path, default=Path("runs/study"))
    p.add_argument("--png", type=Path, default=Path("docs/contrastive_vs_captioning.png"))
    args = parser.parse_args()
    if args.command == "run":
        run(args.out, args.configs, args.lanes, args.only)
    else:
        report(args.runs, args.png)


if __name__ == "__main__":
    sys.exit(main())
