"""CapFilt (BLIP, Li et al. 2022): replace or complement noisy web captions with synthetic ones.

A captioner (a ``cap``, ``cappa`` or ``coca`` checkpoint) writes a caption for every image; a
contrastive model (any checkpoint ``vislang.load`` opens, converted OpenCLIP/HF models included)
scores the image against its original and its generated caption. Without a threshold the better
of the two is kept; with one, every caption scoring at least the threshold is kept (BLIP's filter)
and images left with none are dropped. Output per pool file: ``NAME.parquet`` with uid, both
captions, both scores and the kept captions.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from vislang.curate import models
from vislang.curate.engine import run_tasks
from vislang.curate.images import expand_image_inputs, read_pairs
from vislang.errors import ConfigError, DataError
from vislang.generation import GenerationConfig, generate


def capfilt_file(path: str, out: str, name: str, captioner: str, scorer: str, method: str, beam_size: int,
                 threshold: float | None, batch_size: int = 32) -> dict[str, Any]:  # fmt: skip
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from PIL import Image

    cap_model, cap_tokenizer, cap_preprocess = models.captioner(captioner)
    score_model, score_tokenizer, score_preprocess = models.contrastive(scorer)
    settings = GenerationConfig(method=method, beam_size=beam_size)
    rows: dict[str, list] = {k: [] for k in ("uid", "original", "generated", "score_original", "score_generated",
                                             "kept")}  # fmt: skip
    skipped = 0

    def flush(uids: list[str], originals: list[str], images: list) -> None:
        with torch.no_grad():
            tokens = generate(cap_model, cap_preprocess(images), cap_tokenizer.sot_id, cap_tokenizer.eot_id,
                              cap_tokenizer.pad_id, settings)  # fmt: skip
            generated = [cap_tokenizer.decode(t.tolist()) for t in tokens]
            image_features = score_model.encode_image(score_preprocess(images)).float()
            original_scores = (image_features * score_model.encode_text(score_tokenizer(originals)).float()).sum(-1)
            generated_scores = (image_features * score_model.encode_text(score_tokenizer(generated)).float()).sum(-1)
        for i, uid in enumerate(uids):
            so, sg = float(original_scores[i]), float(generated_scores[i])
            if threshold is None:
                kept = [originals[i] if so >= sg else generated[i]]
            else:
                kept = [c for c, s in ((originals[i], so), (generated[i], sg)) if s >= threshold]
            for key, value in zip(rows, (uid, originals[i], generated[i], so, sg, kept)):
                rows[key].append(value)

    batch: tuple[list, list, list] = ([], [], [])
    for uid, caption, data in read_pairs(Path(path)):
        try:
            image = Image.open(io.BytesIO(data)).convert("RGB")
        except Exception:  # PIL raises many types for broken images
            skipped += 1
            continue
        for part, value in zip(batch, (uid, caption, image)):
            part.append(value)
        if len(batch[0]) == batch_size:
            flush(*batch)
            batch = ([], [], [])
    if batch[0]:
        flush(*batch)
    table = pa.table({**rows, "kept": pa.array(rows["kept"], pa.list_(pa.string()))})
    pq.write_table(table, Path(out) / f"{name}.parquet")
    kept_generated = sum(g in k for g, k in zip(rows["generated"], rows["kept"]))
    kept_original = sum(o in k for o, k in zip(rows["original"], rows["kept"]))
    return {"file": path, "images": len(rows["uid"]), "skipped": skipped, "kept_original": kept_original,
            "kept_generated": kept_generated, "dropped": sum(not k for k in rows["kept"])}  # fmt: skip


def capfilt_pool(
    inputs: list[str],
    out: str | Path,
    captioner: str,
    scorer: str,
    threshold: float | None = None,
    method: str = "greedy",
    beam_size: int = 4,
    engine: str = "local",
    processes: int = 1,
) -> dict[str, Any]:
    """Caption, score and choose captions for every image of the pool; write ``capfilt.json``."""
    if method not in ("greedy", "beam"):
        raise ConfigError(f"unknown caption method {method!r} (greedy or beam)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = expand_image_inputs(inputs)
    models.captioner(captioner), models.contrastive(scorer)  # fail early, before any worker starts
    tasks = [{"path": str(f.resolve()), "out": str(out.resolve()), "name": f"{i:05d}", "captioner": captioner,
              "scorer": scorer, "method": method, "beam_size": beam_size, "threshold": threshold}
             for i, f in enumerate(files)]  # fmt: skip
    results = run_tasks(capfilt_file, tasks, engine, processes, fork=False)
    summary = {key: sum(r[key] for r in results) for key in ("images", "skipped", "kept_original", "kept_generated",
                                                             "dropped")}  # fmt: skip
    if not summary["images"]:
        raise DataError("no readable image in the pool")
    summary |= {"threshold": threshold, "method": method, "files": results}
    (out / "capfilt.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
