"""The comparison table of docs/finetuning.md from the world recipes' run directories.

    python scripts/finetune_world_table.py runs/ft-flyp runs/ft-ce ...

The "zero-shot start" row is the first run's step-0 evaluation (the starting weights, before
any step); each run then reports its own classifier where it has one (``head/...``), else
zero-shot prompts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SHIFTS = ("sketch", "textured", "palette")


def _final(run: Path) -> dict[str, float]:
    return json.loads((run / "metrics.json").read_text())


def _start(run: Path) -> dict[str, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {k: v for r in records if r.get("step") == 0 for k, v in r.items() if k.startswith("zeroshot")}


def _row(name: str, m: dict[str, float]) -> str:
    prefix = "head" if "head/shape/top1" in m else "zeroshot"
    shift = [m[f"{prefix}_{r}/shape/top1"] for r in SHIFTS]
    colour = m.get("zeroshot_filled/color/top1", m.get("zeroshot/color/top1"))
    colour_unseen = m.get("zeroshot_filled/color_unseen/top1", m.get("zeroshot/color_unseen/top1"))
    cells = [m[f"{prefix}/shape/top1"], *shift, sum(shift) / len(shift), colour, colour_unseen]
    return f"| {name} | {prefix} | " + " | ".join(f"{c:.3f}" for c in cells) + " |"


def main(runs: list[str]) -> None:
    print(
        "| run | classifier | shape (ID) | sketch | textured | palette | mean shift | colour (unseen) | colour, held-out pairs |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    print(_row("zero-shot start", _start(Path(runs[0]))))
    for run in map(Path, runs):
        print(_row(run.name, _final(run)))


if __name__ == "__main__":
    main(sys.argv[1:])
