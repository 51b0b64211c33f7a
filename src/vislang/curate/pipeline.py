"""The curation stages over a pool, file by file: match (count) then balance (sample).

``match_pool`` writes, per pool file, ``matches/NAME.parquet`` (uid, text_index, n_texts,
entries: the matched entry ids of every text that matched something) and
``counts/NAME.npy`` (matches per entry), then their sum ``entry_counts.npy`` and ``match.json``.
``balance_pool`` reads them, turns the global counts into per-entry probabilities and writes
``kept/NAME.parquet`` (uid, text_index of every kept text), ``balance.json`` and
``entry_counts.png``: the two passes MetaCLIP's balancing needs, on any number of files and
either engine.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from vislang.curate import balance as bal
from vislang.curate.engine import run_tasks
from vislang.curate.match import EntryMatcher
from vislang.curate.metadata import load_metadata
from vislang.curate.texts import expand_inputs, read_texts
from vislang.errors import DataError

_MATCHERS: dict[str, EntryMatcher] = {}  # per process: built once, reused by every file


def _matcher(metadata: str) -> EntryMatcher:
    if metadata not in _MATCHERS:
        _MATCHERS[metadata] = EntryMatcher(load_metadata(metadata))
    return _MATCHERS[metadata]


def match_file(path: str, metadata: str, out: str, id_column: str, text_columns: list[str]) -> dict[str, Any]:
    """Match every text of one pool file; write its matches and per-entry counts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    matcher = _matcher(metadata)
    uids, text_index, n_texts, offsets, flat = [], [], [], [0], []
    images = texts = 0
    for uid, image_texts in read_texts(Path(path), id_column, tuple(text_columns)):
        images += 1
        texts += len(image_texts)
        for i, text in enumerate(image_texts):
            ids = matcher(text)
            if ids:
                uids.append(uid)
                text_index.append(i)
                n_texts.append(len(image_texts))
                flat += ids
                offsets.append(len(flat))
    name = Path(path).stem
    entries = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat, pa.int32()))
    table = pa.table(
        {
            "uid": pa.array(uids, pa.string()),
            "text_index": pa.array(text_index, pa.int32()),
            "n_texts": pa.array(n_texts, pa.int32()),
            "entries": entries,
        }
    )
    pq.write_table(table, Path(out) / "matches" / f"{name}.parquet")
    np.save(Path(out) / "counts" / f"{name}.npy", np.bincount(np.asarray(flat, dtype=np.int64), minlength=matcher.size))
    return {"file": path, "images": images, "texts": texts, "matched_texts": len(uids)}


def match_pool(
    inputs: list[str],
    metadata: str | Path,
    out: str | Path,
    id_column: str = "uid",
    text_columns: tuple[str, ...] = ("caption",),
    engine: str = "local",
    processes: int = 1,
) -> dict[str, Any]:
    """Match every text of the pool; write per-file matches and the pool's entry counts."""
    files = expand_inputs(inputs)
    out = Path(out)
    (out / "matches").mkdir(parents=True, exist_ok=True)
    (out / "counts").mkdir(exist_ok=True)
    metadata = str(Path(metadata).resolve())
    start = time.perf_counter()
    if engine == "local" and processes > 1:
        _matcher(metadata)  # built before the workers fork, shared by them
    tasks = [
        {"path": str(f.resolve()), "metadata": metadata, "out": str(out.resolve()), "id_column": id_column,
         "text_columns": list(text_columns)}
        for f in files
    ]  # fmt: skip
    results = run_tasks(match_file, tasks, engine, processes)
    counts = sum(np.load(out / "counts" / f"{Path(f).stem}.npy") for f in files)
    np.save(out / "entry_counts.npy", counts)
    summary = {
        "metadata": metadata,
        "entries": int(len(counts)),
        "entries_matched": int((counts > 0).sum()),
        "images": sum(r["images"] for r in results),
        "texts": sum(r["texts"] for r in results),
        "matched_texts": sum(r["matched_texts"] for r in results),
        "matches": int(counts.sum()),
        "seconds": round(time.perf_counter() - start, 3),
        "engine": engine,
        "processes": processes,
        "files": results,
    }
    (out / "match.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def balance_file(match_file: str, counts_file: str, out: str, t: float, seed: int, one_text_per_image: bool) -> dict:
    """Keep each matched text of one file with probability 1 - prod(1 - p_e); write the kept ids."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(match_file)
    counts = np.load(counts_file)
    probs = bal.entry_probabilities(counts, t)
    uids = table.column("uid").to_pylist()
    text_index = np.asarray(table.column("text_index").to_numpy(), dtype=np.int64)
    n_rows = len(uids)
    lists = table.column("entries").combine_chunks()
    flat = np.asarray(lists.flatten().to_numpy(), dtype=np.int64)
    lengths = np.diff(np.asarray(lists.offsets.to_numpy()))
    rows = np.repeat(np.arange(n_rows), lengths)
    keep_p = bal.keep_probabilities(rows, flat, n_rows, probs)
    candidate = np.ones(n_rows, dtype=bool)
    if one_text_per_image:  # MetaCLIP 2: one random text of each image takes part
        n_texts = np.asarray(table.column("n_texts").to_numpy(), dtype=np.int64)
        picks = bal.unit_draws(seed, [f"pick\0{u}" for u in uids])
        candidate = (picks * n_texts).astype(np.int64) == text_index
    draws = bal.unit_draws(seed, [f"{u}\0{i}" for u, i in zip(uids, text_index.tolist())])
    kept = candidate & (draws < keep_p)
    kept_counts = np.bincount(flat[kept[rows]], minlength=len(counts))
    name = Path(match_file).stem
    index = np.flatnonzero(kept)
    pq.write_table(
        pa.table({"uid": pa.array([uids[i] for i in index], pa.string()),
                  "text_index": pa.array(text_index[index], pa.int32())}),
        Path(out) / "kept" / f"{name}.parquet",
    )  # fmt: skip
    np.save(Path(out) / "kept_counts" / f"{name}.npy", kept_counts)
    return {"file": match_file, "matched_texts": n_rows, "kept_texts": int(kept.sum())}


def balance_pool(
    matched: str | Path,
    out: str | Path,
    t: float | None = None,
    tail_share: float | None = None,
    seed: int = 0,
    one_text_per_image: bool = False,
    engine: str = "local",
    processes: int = 1,
) -> dict[str, Any]:
    """Balance a matched pool (``match_pool``'s output) with ``t`` or the ``t`` that gives ``tail_share``."""
    matched, out = Path(matched), Path(out)
    counts_file = matched / "entry_counts.npy"
    if not counts_file.is_file():
        raise DataError(f"{matched}: no entry_counts.npy (run vislang curate match first)")
    counts = np.load(counts_file)
    if (t is None) == (tail_share is None):
        raise DataError("give exactly one of t and tail_share")
    if t is None:
        t = bal.threshold_for_tail_share(counts, tail_share)
    if t <= 0:
        raise DataError(f"t must be positive, got {t}")
    files = sorted((matched / "matches").glob("*.parquet"))
    (out / "kept").mkdir(parents=True, exist_ok=True)
    (out / "kept_counts").mkdir(exist_ok=True)
    start = time.perf_counter()
    tasks = [
        {"match_file": str(f.resolve()), "counts_file": str(counts_file.resolve()), "out": str(out.resolve()),
         "t": float(t), "seed": seed, "one_text_per_image": one_text_per_image}
        for f in files
    ]  # fmt: skip
    results = run_tasks(balance_file, tasks, engine, processes)
    after = sum((np.load(out / "kept_counts" / f"{f.stem}.npy") for f in files), np.zeros_like(counts))
    np.save(out / "kept_entry_counts.npy", after)
    summary = {
        "t": float(t),
        "tail_share_before": bal.tail_share(counts, t),
        "seed": seed,
        "one_text_per_image": one_text_per_image,
        "matched_texts": sum(r["matched_texts"] for r in results),
        "kept_texts": sum(r["kept_texts"] for r in results),
        "entries_matched": int((counts > 0).sum()),
        "largest_entry_before": int(counts.max(initial=0)),
        "largest_entry_after": int(after.max(initial=0)),
        "seconds": round(time.perf_counter() - start, 3),
        "engine": engine,
        "files": results,
    }
    (out / "balance.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_entry_counts(counts, after, t, out / "entry_counts.png")
    return summary


def kept_ids(balanced: str | Path) -> list[tuple[str, int]]:
    """All kept (uid, text_index) pairs of a balanced pool, sorted."""
    import pyarrow.parquet as pq

    pairs: list[tuple[str, int]] = []
    for f in sorted((Path(balanced) / "kept").glob("*.parquet")):
        table = pq.read_table(f)
        pairs += zip(table.column("uid").to_pylist(), table.column("text_index").to_pylist())
    return sorted(pairs)


def plot_entry_counts(before: np.ndarray, after: np.ndarray, t: float, path: Path) -> None:
    """Entry counts sorted from the largest, before and after balancing, with t marked; and the
    cumulative share of matches held by the first k entries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for counts, label in ((before, "before"), (after, "after balancing")):
        c = np.sort(counts[counts > 0])[::-1]
        if not len(c):
            continue
        rank = np.arange(1, len(c) + 1)
        left.loglog(rank, c, label=label)
        right.semilogx(rank, np.cumsum(c) / c.sum(), label=label)
    left.axhline(t, color="k", linestyle="--", linewidth=1, label=f"t = {t:g}")
    left.set(xlabel="entry rank (by count)", ylabel="matched texts", title="Texts per metadata entry")
    right.set(xlabel="entry rank (by count)", ylabel="cumulative share of matches", title="Head vs tail")
    left.legend()
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
