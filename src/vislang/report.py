"""``report.md`` for a run directory: what was trained, curves, the final table and what the
compositional probes say, written for someone who has not read the code."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

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


def write_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    records = read_metrics(run_dir / "metrics.jsonl")
    train_rows = [r for r in records if "train/loss" in r]
    m, v, tt, t = config["model"], config["model"]["vision"], config["model"]["text"], config["train"]
    kind = config["objective"]["kind"]

    lines = [
        "# vislang run report",
        "",
        f"**What was trained.** A `{kind}` model on the `{', '.join(s['kind'] for s in config['data']['sources'])}` data for "
        f"{t['steps']} steps of batch {t['batch_size']} ({t['steps'] * t['batch_size']:,} image–text pairs), "
        f"{t['precision']}, learning rate {t['lr']} with {t['warmup_steps']} warmup steps and cosine decay. "
        f"Image tower: ViT with a `{v['stem']}` stem, {v['image_size']} px input, patch {v['patch_size']}, "
        f"width {v['width']}, depth {v['depth']}, `{v['pool']}` pooling. Text tower: "
        f"{'causal' if tt['causal'] else 'bidirectional'} transformer, width {tt['width']}, depth {tt['depth']}, "
        f"context {tt['context_length']}, `{tt['pool']}` pooling. Shared embedding: {m['embed_dim']} dimensions.",
    ]
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
    lines += ["", "## Final evaluation", "", "| metric | value |", "|---|---|"]
    lines += [f"| `{k}` | {v:.4f} |" for k, v in metrics.items()]
    sentence = probe_sentence(metrics, kind)
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
