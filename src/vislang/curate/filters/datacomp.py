"""DataComp's filtering baselines as filters (Gadre et al., 2023, section 3.4 and appendix).

- ``basic``: English captions (``py3langid``, whose model ships inside the package), more than
  2 words and more than 5 characters, shorter image side >= 200 px, aspect ratio <= 3;
- ``clip_score``: the cosine similarity of image and caption under a model, kept above a
  threshold or in the top fraction (the threshold is the score at index floor(N * fraction) of
  the descending sort);
- ``text``: a caption word's first WordNet noun synset is in a given set (ImageNet's wnids);
- ``image``: k-means (faiss) on the pool's image embeddings; keep the clusters nearest to a
  target set's embeddings.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np
from braceexpand import braceexpand
from PIL import Image
from pydantic import Field, field_validator, model_validator

from vislang.curate.filters.base import FilterConfig, FilterContext, PerSample, Sample
from vislang.curate.images import expand_image_inputs, read_images
from vislang.curate.models import ImageEncoder
from vislang.errors import ConfigError, DataError

WORDNET = "/usr/share/wordnet"  # Debian's wordnet-base


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


def target_embeddings(target: list[str], checkpoint: str) -> np.ndarray:
    """Normalised embeddings of the target set's readable images (unreadable ones are passed over)."""
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


class BasicFilter(FilterConfig):
    """DataComp's basic rules: English, more than 2 words and 5 characters, shorter side >= 200,
    aspect ratio <= 3. No options: the rules are the baseline's."""

    requires = ("py3langid",)

    def per_sample(self) -> PerSample:
        import py3langid  # the curate extra, checked before the pool run

        def passes(sample: Sample) -> bool:
            language = py3langid.classify(sample.caption)[0] if sample.caption.strip() else ""
            return basic_rules(sample.caption, sample.width, sample.height, language)

        return passes

    def keep(self, table: dict[str, np.ndarray], context: FilterContext) -> np.ndarray:
        return np.asarray(table["per_sample"], dtype=bool)


class ClipScoreFilter(FilterConfig):
    """The image-caption cosine under a contrastive model, above a fixed threshold or in the top
    fraction of the pool; ``filter.json`` also records the threshold used."""

    features = frozenset({"clip_score"})
    threshold: float | None = Field(None, ge=-1.0, le=1.0, description="keep cosine scores >= this")
    fraction: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="keep this top fraction by score (e.g. 0.3): the threshold is the score at index "
        "floor(N * fraction) of the descending sort",
    )

    @model_validator(mode="after")
    def _one_rule(self) -> ClipScoreFilter:
        if self.threshold is not None and self.fraction is not None:
            raise ValueError("threshold and fraction exclude each other")
        if self.threshold is None and self.fraction is None:
            raise ValueError("give threshold or fraction")
        return self

    def keep(self, table: dict[str, np.ndarray], context: FilterContext) -> np.ndarray:
        scores = np.asarray(table["clip_score"])
        limit = self.threshold if self.threshold is not None else fraction_threshold(scores, self.fraction)
        context.note("clip_score_threshold", limit)
        return scores >= limit


class TextFilter(FilterConfig):
    """Captions with a word whose first WordNet noun synset is in a given set (DataComp's
    text-based baseline uses ImageNet-1k's wnids)."""

    label = "text_synsets"
    synsets: str = Field(description="a file of WordNet noun ids, one per line (e.g. ImageNet's n01440764 ...)")
    wordnet: str = Field(WORDNET, description=f"a WordNet 3.0 dict folder with index.noun (default {WORDNET})")

    @field_validator("synsets")
    @classmethod
    def _synsets_file(cls, value: str) -> str:
        read_wnids(value)
        return value

    @field_validator("wordnet")
    @classmethod
    def _wordnet_folder(cls, value: str) -> str:
        if not (Path(value) / "index.noun").is_file():
            raise ValueError(f"no index.noun in {value} (a WordNet 3.0 dict folder)")
        return value

    def per_sample(self) -> PerSample:
        nouns, wanted = WordNetNouns(self.wordnet), set(read_wnids(self.synsets))
        return lambda sample: nouns.any_in(sample.caption, wanted)

    def keep(self, table: dict[str, np.ndarray], context: FilterContext) -> np.ndarray:
        return np.asarray(table["per_sample"], dtype=bool)


def read_wnids(path: str) -> list[str]:
    """The wnids of a synsets file; ValueError (a config problem) when it is missing, empty or
    holds something else, since a stray line would silently match nothing."""
    try:
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read {path} ({type(error).__name__})") from None
    wnids = [line for line in lines if line]
    bad = next((i for i, line in enumerate(lines, 1) if line and not re.fullmatch(r"n\d{8}", line)), None)
    if bad is not None:
        raise ValueError(f"{path} line {bad}: {lines[bad - 1]!r} is not a WordNet noun id (n + 8 digits)")
    if not wnids:
        raise ValueError(f"{path} lists no synset")
    return wnids


class ImageFilter(FilterConfig):
    """k-means on the pool's image embeddings; keep the clusters nearest to a target set's images
    (DataComp's image-based baseline: ImageNet-1k's training images as the target)."""

    features = frozenset({"image_embedding"})
    requires = ("faiss",)
    label = "image_clusters"
    target: list[str] = Field(
        min_length=1, description="target images: folders, .tar shards or parquet tables (brace patterns allowed)"
    )
    clusters: int = Field(ge=1, description="k-means clusters of the pool's image embeddings (at most one per sample)")
    seed: int = Field(0, description="the k-means seed")

    @field_validator("target", mode="before")
    @classmethod
    def _target_paths(cls, value: Any) -> Any:
        value = [value] if isinstance(value, str) else value
        if isinstance(value, list):
            missing = next((p for spec in value if isinstance(spec, str) for p in braceexpand(spec)
                            if not Path(p).exists()), None)  # fmt: skip
            if missing is not None:
                raise ValueError(f"not found: {missing}")
        return value

    def keep(self, table: dict[str, np.ndarray], context: FilterContext) -> np.ndarray:
        if context.checkpoint is None:  # filter_pool refuses this earlier; keep() may be called on its own
            raise ConfigError("filter image needs a checkpoint (any model vislang.load opens)")
        target = target_embeddings(self.target, context.checkpoint)
        return image_cluster_keep(context.image_embeddings(), target, self.clusters, self.seed)
