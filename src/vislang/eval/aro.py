"""ARO (Yuksekgonul et al. 2023) on real data: VG-Relation, VG-Attribution, COCO-Order, Flickr30k-Order.

File formats (as the ARO release ships them, images in local folders):
- ``visual_genome_relation.json`` / ``visual_genome_attribution.json``: a list of items with
  ``image_path`` (relative to the image folder), ``bbox_x``, ``bbox_y``, ``bbox_w``, ``bbox_h``
  (the region the captions describe; the image is cropped to it), ``true_caption``,
  ``false_caption``, and ``relation_name`` (VG-Relation) or ``attributes`` (a list of two,
  VG-Attribution).
- ``coco_karpathy_test.json`` / ``flickr30k_test.json``: a list of ``{"image": relative path,
  "caption": [captions...]}``; every (image, caption) pair is one item whose candidates are the
  caption and four perturbations of it (ARO's: shuffle nouns and adjectives, shuffle everything
  else, shuffle within trigrams, shuffle trigrams). ARO finds nouns and adjectives with spaCy;
  vislang uses the noun-phrase rules of :mod:`vislang.data.negatives` (head = noun, words before
  it = adjectives), so Order scores are close to, not identical with, the paper's protocol.

Scores: accuracy (the true caption must outscore every other candidate; ties get the expected
credit of a random tie-break, where ARO's code counts them wrong for VG and right for Order)
and the macro average over relations / attribute pairs (pairs with fewer than ``min_group``
items are left out of the macro average, 25 as in ARO's code). Beside each, the same scores
for a text-only baseline: a leave-one-out bigram language model of the set's own true captions,
which sees no image (SugarCrepe's warning: plausibility alone solves many items).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import Field

from vislang.data.negatives import noun_phrases, split_words
from vislang.data.transforms import ImageTransform, to_tensor
from vislang.errors import DataError
from vislang.eval.encode import device_of
from vislang.eval.metrics import candidate_credit
from vislang.eval.tasks import EvalContext, Evaluator, TaskConfig
from vislang.objectives import Objective

KINDS = ("vg_relation", "vg_attribution", "coco_order", "flickr30k_order")


@dataclass(frozen=True)
class AroItem:
    image: Path
    captions: tuple[str, ...]  # the true caption first
    group: str = ""  # relation name or attribute pair (VG sets)
    box: tuple[float, float, float, float] | None = None  # x, y, width, height


def _read_list(path: Path) -> list:
    if not path.is_file():
        raise DataError(f"ARO annotations not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"cannot read ARO annotations {path}: {error}") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of items, got {type(data).__name__}")
    return data


def _field(item: dict, key: str, path: Path, index: int):
    if not isinstance(item, dict) or key not in item:
        raise DataError(f"{path}: item {index} has no key {key!r}")
    return item[key]


def load_vg(path: str | Path, image_root: str | Path, kind: str) -> list[AroItem]:
    """VG-Relation (``kind="vg_relation"``) or VG-Attribution items."""
    path, root = Path(path), Path(image_root)
    items = []
    for i, item in enumerate(_read_list(path)):
        box = tuple(float(_field(item, f"bbox_{k}", path, i)) for k in "xywh")
        if kind == "vg_relation":
            group = str(_field(item, "relation_name", path, i))
        else:
            attributes = _field(item, "attributes", path, i)
            if not isinstance(attributes, list) or len(attributes) < 2:
                raise DataError(f"{path}: item {i}: 'attributes' must list two attributes")
            group = f"{attributes[0]}_{attributes[1]}"
        captions = (str(_field(item, "true_caption", path, i)), str(_field(item, "false_caption", path, i)))
        items.append(AroItem(root / str(_field(item, "image_path", path, i)), captions, group, box))
    return items


def clean_caption(text: str, max_words: int = 30) -> str:
    """ARO's caption normalisation for the Order sets: lower case, drop .!"()*#:;~, at most 30 words."""
    text = re.sub(r"[.!\"()*#:;~]", " ", text.lower())
    return " ".join(text.split()[:max_words])


def _positions(words: list[str]) -> tuple[list[int], list[int]]:
    """Indices of head nouns and of adjectives (the words between determiner and head)."""
    nouns, adjectives = [], []
    for phrase in noun_phrases(words):
        nouns.append(phrase.head)
        adjectives += list(range(phrase.start + 1, phrase.head))
    return nouns, adjectives


def _permute_at(words: list[str], positions: list[int], rng: np.random.Generator) -> list[str]:
    out = list(words)
    for i, j in zip(positions, rng.permutation(positions)):
        out[i] = words[j]
    return out


def order_perturbations(caption: str, rng: np.random.Generator) -> list[str]:
    """ARO's four Order perturbations of a caption."""
    words = split_words(caption)
    nouns, adjectives = _positions(words)
    shuffled = _permute_at(_permute_at(words, nouns, rng), adjectives, rng)
    tagged = set(nouns) | set(adjectives)
    others = _permute_at(words, [i for i in range(len(words)) if i not in tagged], rng)
    trigrams = [words[i : i + 3] for i in range(0, len(words), 3)]
    within = [w for t in trigrams for w in (t[i] for i in rng.permutation(len(t)))]
    across = [w for i in rng.permutation(len(trigrams)) for w in trigrams[i]]
    return [" ".join(p) for p in (shuffled, others, within, across)]


def load_order(path: str | Path, image_root: str | Path, seed: int = 0) -> list[AroItem]:
    """COCO-Order / Flickr30k-Order items: one per (image, caption), five candidates each."""
    path, root = Path(path), Path(image_root)
    rng = np.random.default_rng(seed)
    items = []
    for i, item in enumerate(_read_list(path)):
        captions = _field(item, "caption", path, i)
        for caption in [captions] if isinstance(captions, str) else captions:
            candidates = [clean_caption(caption)] + [clean_caption(p) for p in order_perturbations(caption, rng)]
            items.append(AroItem(root / str(_field(item, "image", path, i)), tuple(candidates)))
    return items


def load_aro(kind: str, annotations: str | Path, image_root: str | Path, seed: int = 0) -> list[AroItem]:
    if kind in ("vg_relation", "vg_attribution"):
        return load_vg(annotations, image_root, kind)
    if kind in ("coco_order", "flickr30k_order"):
        return load_order(annotations, image_root, seed)
    raise DataError(f"unknown ARO set {kind!r}; choose from {', '.join(KINDS)}")


# -- the text-only baseline ----------------------------------------------------------------------


def _bigrams(text: str) -> list[tuple[str, str]]:
    words = ["<s>", *text.lower().split(), "</s>"]
    return list(zip(words, words[1:]))


def text_only_scores(items: Sequence[AroItem], smoothing: float = 0.1) -> np.ndarray:
    """[N, K] log-probabilities of each candidate under an add-``smoothing`` bigram model of the
    other items' true captions (leave-one-out: an item's own true caption is never counted)."""
    pairs, firsts = Counter(), Counter()
    for item in items:
        for a, b in _bigrams(item.captions[0]):
            pairs[a, b] += 1
            firsts[a] += 1
    vocab = len({w for a, b in pairs for w in (a, b)}) + 1
    scores = np.zeros((len(items), len(items[0].captions)))
    for n, item in enumerate(items):
        own = Counter(_bigrams(item.captions[0]))
        own_firsts = Counter(a for a, _ in own.elements())
        for k, caption in enumerate(item.captions):
            scores[n, k] = sum(
                math.log((pairs[a, b] - own[a, b] + smoothing) / (firsts[a] - own_firsts[a] + smoothing * vocab))
                for a, b in _bigrams(caption)
            )
    return scores


# -- the evaluator -------------------------------------------------------------------------------


def _accuracies(correct: np.ndarray, groups: Sequence[str], min_group: int) -> tuple[float, float]:
    """(accuracy over items, macro average over groups with at least ``min_group`` items)."""
    by_group = defaultdict(list)
    for value, group in zip(correct, groups):
        by_group[group].append(value)
    means = [np.mean(v) for v in by_group.values() if len(v) >= min_group]
    return float(np.mean(correct)), float(np.mean(means)) if means else float("nan")


class AroEvaluator:
    """One ARO set under the evaluator protocol: ``aro/<kind>/acc``, ``macro_acc`` (VG sets),
    ``text_only_acc``/``text_only_macro_acc``, and ``skipped`` (items whose image is missing)."""

    def __init__(
        self,
        kind: str,
        items: Sequence[AroItem],
        tokenizer,
        image_size: int,
        mean,
        std,
        batch_size: int = 256,
        min_group: int = 25,
        resize_mode: str = "shortest",
        interpolation: str = "bicubic",
    ) -> None:
        present = [item for item in items if item.image.is_file()]
        if not present:
            raise DataError(f"ARO {kind}: none of the {len(items)} images exist (first: {items[0].image})")
        self.name, self.items, self.skipped = f"aro/{kind}", present, len(items) - len(present)
        self.tokenizer, self.mean, self.std = tokenizer, mean, std
        self.transform = ImageTransform(image_size, resize_mode, interpolation=interpolation)
        self.batch_size, self.grouped = batch_size, kind.startswith("vg_")
        self.min_group = min_group
        text_only = torch.as_tensor(text_only_scores(present))
        self.text_only = candidate_credit(text_only).numpy()

    def _image(self, item: AroItem) -> np.ndarray:
        with Image.open(item.image) as image:
            image = image.convert("RGB")
            if item.box is not None:
                x, y, w, h = item.box
                image = image.crop((x, y, x + w, y + h))
            return self.transform(image)

    @torch.no_grad()
    def __call__(self, objective: Objective, features=None) -> dict[str, float]:
        device, correct = device_of(objective), []
        for start in range(0, len(self.items), self.batch_size):
            batch = self.items[start : start + self.batch_size]
            images = to_tensor(np.stack([self._image(item) for item in batch]), self.mean, self.std).to(device)
            k = len(batch[0].captions)
            tokens = self.tokenizer([c for item in batch for c in item.captions]).to(device)
            image_features = objective.image_features(images).float()
            text_features = objective.text_features(tokens)
            text_features = text_features.view(len(batch), k, *text_features.shape[1:])
            scores = objective.pair_scores(image_features, text_features).float().cpu()
            correct.append(candidate_credit(scores).numpy())
        groups = [item.group for item in self.items]
        out = {f"{self.name}/skipped": float(self.skipped)}
        for prefix, values in (("", np.concatenate(correct)), ("text_only_", self.text_only)):
            accuracy, macro = _accuracies(values, groups, self.min_group)
            out[f"{self.name}/{prefix}acc"] = accuracy
            if self.grouped:
                out[f"{self.name}/{prefix}macro_acc"] = macro
        return out


class AroTask(TaskConfig):
    """One ARO set on local files: ``aro/<kind>/acc`` and its text-only baseline."""

    type: Literal["aro"] = Field("aro", description="the task type")
    path_fields: ClassVar[tuple[str, ...]] = ("annotations", "images")
    kind: Literal["vg_relation", "vg_attribution", "coco_order", "flickr30k_order"] = Field(
        description="which ARO set the annotations file is"
    )
    annotations: str = Field(description="the set's JSON file")
    images: str = Field(description="folder the JSON's image paths are relative to")
    min_group: int = Field(
        25, ge=1, description="relations / attribute pairs with fewer items stay out of the macro average"
    )

    def metric_prefix(self) -> str:
        return f"aro/{self.kind}"

    def build(self, context: EvalContext) -> list[Evaluator]:
        items = load_aro(self.kind, self.annotations, self.images, context.seed)
        return [
            AroEvaluator(
                self.kind,
                items,
                context.tokenizer,
                context.image_size,
                context.mean,
                context.std,
                context.batch_size,
                self.min_group,
                context.resize_mode,
                context.interpolation,
            )
        ]
