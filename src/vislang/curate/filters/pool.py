"""Filtering a pool: one worker pass over its files, then each filter's decision, intersected.

The worker pass computes only what the chosen filters ask for (the model is loaded only when one
reads a model feature) and writes ``features/NAME.parquet`` (uid, width, height, the requested
features, ``filter.NAME`` for each filter's per-sample values) and ``features/NAME.npy`` (image
embeddings, when asked for). The subset is written as the sorted uid list (``subset.txt``) and,
when every uid is 32 hex digits as in DataComp, as DataComp's ``u8,u8`` ``subset.npy``;
``filter.json`` has the counts.
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from vislang.curate.engine import run_tasks
from vislang.curate.filters.base import (
    FEATURES,
    MODEL_FEATURES,
    FilterConfig,
    FilterContext,
    Sample,
    class_path,
    resolve_class,
)
from vislang.curate.filters.registry import FILTERS, FilterSpec, build_filters
from vislang.curate.images import expand_image_inputs, read_pairs
from vislang.curate.models import ImageEncoder, encode_texts
from vislang.errors import ConfigError, DataError


def column(name: str) -> str:
    """The features table's column of filter ``name``'s per-sample values."""
    return f"filter.{name}"


def filter_pool(
    inputs: list[str],
    out: str | Path,
    filters: Mapping[str, FilterSpec],
    checkpoint: str | None = None,
    engine: str = "local",
    processes: int = 1,
) -> dict[str, Any]:
    """Keep the samples every filter keeps; write the subset files and ``filter.json``.

    ``filters`` maps a name of :data:`~vislang.curate.filters.FILTERS` to its config or options
    (``{"basic": {}, "clip_score": {"fraction": 0.3}}``); ``checkpoint`` is the model for the
    filters that read model features (CLIP score, image embeddings).
    """
    chosen = build_filters(filters)
    needs_model = check_needs(chosen, checkpoint)
    out = Path(out)
    folder = out / "features"
    folder.mkdir(parents=True, exist_ok=True)
    features = sorted(set().union(*(f.features for f in chosen.values())))
    shipped = [
        {"name": n, "class": class_path(type(f)), "options": f.model_dump(mode="json")} for n, f in chosen.items()
    ]
    tasks = [{"path": str(f.resolve()), "out": str(folder.resolve()), "name": f"{i:05d}",
              "checkpoint": checkpoint if needs_model else None, "features": features, "filters": shipped}
             for i, f in enumerate(expand_image_inputs(inputs))]  # fmt: skip
    results = run_tasks(features_file, tasks, engine, processes, fork=not needs_model)
    table = _gather([folder / f"{t['name']}.parquet" for t in tasks])
    n = len(table["uid"])
    if not n:
        raise DataError("no readable sample in the pool")
    embedding_files = [folder / f"{t['name']}.npy" for t in tasks] if "image_embedding" in features else []
    context = FilterContext(checkpoint, embedding_files)
    keep, passed = np.ones(n, dtype=bool), {}
    for name, config in chosen.items():
        view = {k: v for k, v in table.items() if not k.startswith("filter.")}
        if column(name) in table:
            view["per_sample"] = table[column(name)]
        mask = np.asarray(config.keep(view, context), dtype=bool)
        if mask.shape != (n,):
            raise ValueError(f"filter {name}: keep() returned shape {mask.shape} for {n} samples")
        passed[config.label or name], keep = int(mask.sum()), keep & mask
        passed.update(context.take_notes())
    kept = [u for u, k in zip(table["uid"].tolist(), keep) if k]
    written = write_subset(kept, out)
    summary = {"samples": n, "skipped_unreadable": sum(r["skipped"] for r in results), "passed": passed,
               "kept": len(kept), "files": written}  # fmt: skip
    (out / "filter.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def check_needs(filters: dict[str, FilterConfig], checkpoint: str | None) -> bool:
    """Refuse, before any work, a filter whose optional module is missing or that needs the
    model when no checkpoint is given; whether the pass needs the model."""
    for name, config in filters.items():
        if unknown := sorted(config.features - FEATURES):
            raise ConfigError(f"filter {name} asks for unknown features {unknown} (known: {sorted(FEATURES)})")
        for module in config.requires:
            if importlib.util.find_spec(module) is None:
                raise ConfigError(f"filter {name} needs {module}: pip install 'vislang[curate]'")
    needing = [name for name, config in filters.items() if config.needs_checkpoint()]
    if needing and not checkpoint:
        which = f"filter {needing[0]} needs" if len(needing) == 1 else f"filters {', '.join(needing)} need"
        raise ConfigError(f"{which} a checkpoint (--checkpoint: any model vislang.load opens)")
    return bool(needing)


def features_file(
    path: str, out: str, name: str, checkpoint: str | None, features: list[str], filters: list[dict[str, Any]]
) -> dict[str, Any]:
    """The worker pass over one pool file: the requested features and every filter's per-sample
    values of each readable sample. Unreadable images are skipped and counted. Filters arrive
    as (class path, options), so a worker on another process or node rebuilds them."""
    built = {spec["name"]: _filter_class(spec).model_validate(spec["options"]) for spec in filters}
    per_sample = {n: fn for n, config in built.items() if (fn := config.per_sample()) is not None}
    encoder = ImageEncoder(checkpoint) if checkpoint and MODEL_FEATURES & set(features) else None
    rows: dict[str, list] = {"uid": [], "width": [], "height": [], "caption": []}
    rows.update({column(n): [] for n in per_sample})
    skipped = 0
    for uid, caption, data in read_pairs(Path(path)):
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                decoded = image.convert("RGB") if encoder is not None else None  # only the size otherwise
        except Exception:  # PIL raises many types for broken images
            skipped += 1
            continue
        if encoder is not None:
            encoder.add(decoded)
        sample = Sample(uid, caption, width, height, data)
        for key, value in (("uid", uid), ("width", width), ("height", height), ("caption", caption)):
            rows[key].append(value)
        for n, fn in per_sample.items():
            rows[column(n)].append(fn(sample))
    embeddings = np.zeros((len(rows["uid"]), 0), np.float32)
    if encoder is not None and rows["uid"]:
        embeddings = encoder.result()
    if "clip_score" in features:
        scores = (embeddings * encode_texts(checkpoint, rows["caption"])).sum(-1) if rows["uid"] else []
        rows["clip_score"] = np.asarray(scores, np.float32).tolist()
    if "caption" not in features:
        del rows["caption"]
    pq.write_table(pa.table(rows), Path(out) / f"{name}.parquet")
    if "image_embedding" in features:
        np.save(Path(out) / f"{name}.npy", embeddings)
    return {"file": path, "samples": len(rows["uid"]), "skipped": skipped}


def _filter_class(spec: dict[str, Any]) -> type[FilterConfig]:
    """The registry's class when it is the one shipped (in the caller's process, or forked from
    it: a filter defined anywhere), else the class imported by its path (a fresh process)."""
    registered = FILTERS.get(spec["name"])
    if registered is not None and class_path(registered) == spec["class"]:
        return registered
    return resolve_class(spec["class"])


def _gather(paths: list[Path]) -> dict[str, np.ndarray]:
    """The worker pass's tables as one, column by column (a file without readable samples has
    untyped columns: promoted to the others' types)."""
    if not paths:
        return {"uid": np.array([], dtype=object)}
    table = pa.concat_tables([pq.read_table(p) for p in paths], promote_options="default")
    return {name: table.column(name).to_numpy() for name in table.column_names}


def write_subset(uids: list[str], out: Path) -> list[str]:
    """``subset.txt`` (sorted uids) and, for 32-hex-digit uids, DataComp's ``subset.npy`` (u8,u8)."""
    ordered = sorted(uids)
    (out / "subset.txt").write_text("".join(f"{u}\n" for u in ordered))
    written = ["subset.txt"]
    if ordered and all(re.fullmatch(r"[0-9a-fA-F]{32}", u) for u in ordered):
        pairs = sorted((int(u[:16], 16), int(u[16:], 16)) for u in ordered)
        np.save(out / "subset.npy", np.array(pairs, dtype=np.dtype("u8,u8")))
        written.append("subset.npy")
    return written
