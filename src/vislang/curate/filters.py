"""DataComp's filtering baselines over a pool, and their intersections.

- ``basic``: English captions (``py3langid``, whose model ships inside the package), more than
  2 words and more than 5 characters, shorter image side >= 200 px, aspect ratio <= 3;
- ``clip_score``: the cosine similarity of image and caption under a model, kept above a
  threshold or in the top fraction (the threshold is the score at index floor(N * fraction) of
  the descending sort);
- ``text``: a caption word's first WordNet noun synset is in a given set (ImageNet's wnids);
- ``image``: k-means (faiss) on the pool's image embeddings; keep the clusters nearest to a
  target set's embeddings.

Given several, a sample must pass all. The subset is written as the sorted uid list
(``subset.txt``) and, when every uid is 32 hex digits as in DataComp, as DataComp's ``u8,u8``
``.npy``.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from vislang.curate.engine import run_tasks
from vislang.curate.images import expand_image_inputs, read_pairs
from vislang.curate.models import ImageEncoder, encode_texts
from vislang.errors import ConfigError, DataError


def basic_rules(caption: str, width: int, height: int, language: str) -> bool:
    words = caption.split()
    side, long_side = min(width, height), max(width, height)
    return language == "en" and len(words) > 2 and len(caption) > 5 and side >= 200 and long_side <= 3 * side


def fraction_threshold(scores: np.ndarray, fraction: float) -> float:
    """The score at index floor(N * fraction) of the descending sort (keep scores >= it)."""
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"the kept fraction must be in (0, 1], got {fraction}")
    ordered = np.sort(np.asarray(scores))[::-1]
    return float(ordered[min(int(len(ordered) * fraction), len(ordered) - 1)])


class WordNetNouns:
    """First noun synset (as a wnid, ``n`` + 8-digit offset) of a word, from WordNet's
    ``index.noun`` and ``noun.exc``, with WordNet's noun detachment rules for plurals."""

    _RULES = (("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"),
              ("ies", "y"))  # fmt: skip

    def __init__(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.first: dict[str, str] = {}
        try:
            for line in (directory / "index.noun").read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith("  ") or not line.strip():
                    continue
                fields = line.split()
                n_pointers = int(fields[3])  # then sense_cnt, tagsense_cnt, the synset offsets by frequency
                self.first[fields[0]] = "n" + fields[4 + n_pointers + 2][:8]
        except (OSError, IndexError, ValueError) as error:
            raise DataError(f"{directory}: cannot read WordNet's index.noun ({error})") from None
        self.exceptions: dict[str, str] = {}
        exc = directory / "noun.exc"
        if exc.is_file():
            for line in exc.read_text(encoding="utf-8", errors="replace").splitlines():
                parts = line.split()
                if len(parts) >= 2:
                    self.exceptions[parts[0]] = parts[1]

    def synset(self, word: str) -> str | None:
        word = word.lower()
        for form in (word, self.exceptions.get(word, "")):
            if form in self.first:
                return self.first[form]
        for suffix, base in self._RULES:
            if word.endswith(suffix) and word[: len(word) - len(suffix)] + base in self.first:
                return self.first[word[: len(word) - len(suffix)] + base]
        return None

    def any_in(self, caption: str, synsets: set[str]) -> bool:
        return any(self.synset(w) in synsets for w in re.findall(r"[a-z]+", caption.lower()))


def image_cluster_keep(pool: np.ndarray, target: np.ndarray, clusters: int, seed: int = 0) -> np.ndarray:
    """Keep-mask of the pool items whose k-means cluster is the nearest cluster of some target item."""
    import faiss

    pool = np.ascontiguousarray(pool, dtype=np.float32)
    kmeans = faiss.Kmeans(pool.shape[1], min(clusters, len(pool)), niter=20, seed=seed, spherical=True)
    kmeans.train(pool)
    _, assigned = kmeans.index.search(pool, 1)
    _, wanted = kmeans.index.search(np.ascontiguousarray(target, dtype=np.float32), 1)
    return np.isin(assigned[:, 0], np.unique(wanted[:, 0]))


def features_file(path: str, out: str, name: str, checkpoint: str | None, wordnet: str | None,
                  synsets: list[str] | None) -> dict[str, Any]:  # fmt: skip
    """Per-sample features of one pool file: basic-rule verdict, image size, CLIP score, image
    embedding, text-synset hit. Unreadable images are skipped and counted."""
    import py3langid
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    nouns = WordNetNouns(wordnet) if synsets else None
    wanted = set(synsets or [])
    rows: dict[str, list] = {"uid": [], "basic": [], "width": [], "height": [], "synset": []}
    encoder = ImageEncoder(checkpoint) if checkpoint else None
    captions, skipped = [], 0
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
        language = py3langid.classify(caption)[0] if caption.strip() else ""
        rows["uid"].append(uid)
        rows["basic"].append(basic_rules(caption, width, height, language))
        rows["width"].append(width)
        rows["height"].append(height)
        rows["synset"].append(bool(nouns and nouns.any_in(caption, wanted)))
        captions.append(caption)
    scores, embeddings = np.zeros(len(captions), np.float32), np.zeros((len(captions), 0), np.float32)
    if encoder is not None and captions:
        embeddings = encoder.result()
        scores = (embeddings * encode_texts(checkpoint, captions)).sum(-1)
    rows["clip_score"] = scores.tolist()
    pq.write_table(pa.table(rows), Path(out) / f"{name}.parquet")
    np.save(Path(out) / f"{name}.npy", embeddings)
    return {"file": path, "samples": len(captions), "skipped": skipped}


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


def filter_pool(
    inputs: list[str],
    out: str | Path,
    basic: bool = False,
    checkpoint: str | None = None,
    clip_threshold: float | None = None,
    clip_fraction: float | None = None,
    synsets_file: str | None = None,
    wordnet: str | None = None,
    target: list[str] | None = None,
    clusters: int = 0,
    seed: int = 0,
    engine: str = "local",
    processes: int = 1,
) -> dict[str, Any]:
    """Apply the chosen filters (their intersection) and write the subset files and ``filter.json``."""
    import pyarrow.parquet as pq

    try:
        import faiss  # noqa: F401
        import py3langid  # noqa: F401
    except ImportError:
        raise ConfigError(
            "vislang curate filter needs py3langid and faiss-cpu: pip install 'vislang[curate]'"
        ) from None
    use_clip = clip_threshold is not None or clip_fraction is not None
    use_image = bool(target)
    if not (basic or use_clip or synsets_file or use_image):
        raise ConfigError("choose at least one filter: --basic, --clip-threshold/--clip-fraction, --synsets, --target")
    if (use_clip or use_image) and not checkpoint:
        raise ConfigError("CLIP-score and image-based filters need --checkpoint (any model vislang.load opens)")
    if use_image and clusters < 1:
        raise ConfigError("the image-based filter needs --clusters K")
    synsets = None
    if synsets_file:
        synsets = [line.strip() for line in Path(synsets_file).read_text().splitlines() if line.strip()]
        if wordnet is None:
            raise ConfigError("the text-based filter needs --wordnet (a WordNet 3.0 dict folder)")
    out = Path(out)
    folder = out / "features"
    folder.mkdir(parents=True, exist_ok=True)
    files = expand_image_inputs(inputs)
    tasks = [{"path": str(f.resolve()), "out": str(folder.resolve()), "name": f"{i:05d}", "checkpoint": checkpoint,
              "wordnet": wordnet, "synsets": synsets} for i, f in enumerate(files)]  # fmt: skip
    results = run_tasks(features_file, tasks, engine, processes, fork=checkpoint is None)
    table = pq.read_table([folder / f"{t['name']}.parquet" for t in tasks]).to_pydict()
    n = len(table["uid"])
    if not n:
        raise DataError("no readable sample in the pool")
    keep = np.ones(n, dtype=bool)
    passed: dict[str, int] = {}
    if basic:
        mask = np.array(table["basic"], dtype=bool)
        passed["basic"], keep = int(mask.sum()), keep & mask
    if use_clip:
        scores = np.array(table["clip_score"])
        limit = clip_threshold if clip_threshold is not None else fraction_threshold(scores, clip_fraction)
        mask = scores >= limit
        passed["clip_score"], keep = int(mask.sum()), keep & mask
        passed["clip_score_threshold"] = limit
    if synsets:
        mask = np.array(table["synset"], dtype=bool)
        passed["text_synsets"], keep = int(mask.sum()), keep & mask
    if use_image:
        embeddings = np.concatenate([np.load(folder / f"{t['name']}.npy") for t in tasks])
        target_emb = _target_embeddings(target, checkpoint)
        mask = image_cluster_keep(embeddings, target_emb, clusters, seed)
        passed["image_clusters"], keep = int(mask.sum()), keep & mask
    kept = [u for u, k in zip(table["uid"], keep) if k]
    written = write_subset(kept, out)
    summary = {"samples": n, "skipped_unreadable": sum(r["skipped"] for r in results), "passed": passed,
               "kept": len(kept), "files": written}  # fmt: skip
    (out / "filter.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _target_embeddings(target: list[str], checkpoint: str) -> np.ndarray:
    from PIL import Image

    from vislang.curate.images import read_images

    encoder, found = ImageEncoder(checkpoint), 0
    for path in expand_image_inputs(target):
        for _, data in read_images(path):
            try:
                with Image.open(io.BytesIO(data)) as image:
                    encoder.add(image.convert("RGB"))
                found += 1
            except Exception:  # PIL raises many types for broken images
                continue
    if not found:
        raise DataError("the target set has no readable image")
    return encoder.result()
