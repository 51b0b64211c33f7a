"""Blind baselines: scoring a caption without looking at the image.

SugarCrepe was built because text-only models (a commonsense plausibility scorer, a grammar
scorer) beat CLIP on earlier compositional suites without seeing any image. A compositional
score therefore means little alone; it is reported beside what text alone achieves.

Two blind scorers:

- :class:`NgramLM`: a word n-gram language model of a caption corpus the user names, with
  interpolated Kneser–Ney smoothing. A caption's score is its *mean* log-probability per token
  (the end-of-caption token included). SugarCrepe's blind scorers judge plausibility or
  grammaticality, which does not fall with length; a summed log-probability would instead
  prefer the shorter caption, and the ADD negatives are the longer ones, so a summed score
  would "solve" ADD by length alone. Mean per token removes that.
- :func:`text_tower_plausibility`: the evaluated model's own text side with no image. For an
  embedding objective, the cosine of each caption's embedding to the centroid of all candidate
  embeddings (typicality among the candidates: positives and negatives come in equal numbers,
  so the centroid carries no label). For a captioner (Cap, CapPa, CoCa), the decoder's
  log-likelihood of the caption given a blank image (the normalised mean colour, all zeros),
  summed over tokens like the model's own image-conditioned score, so the baseline shows how
  much of that score the text prior alone explains (length effects included).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vislang.errors import DataError
from vislang.eval.encode import FeatureCache, autocast, device_of
from vislang.files import parse_json, read_text
from vislang.objectives import Objective
from vislang.objectives.captioning import sequence_log_likelihood

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    """Lower-cased word tokens: runs of letters and digits (with an apostrophe suffix such as
    ``'s``); punctuation is dropped, so "dog." and "dog" are one word."""
    return _WORD.findall(text.lower())


def _discount(counts: Iterable[int]) -> float:
    """Kneser–Ney's absolute discount from the counts of counts, D = n1 / (n1 + 2 n2), kept in
    [0.1, 0.9] so that every context leaves some mass for unseen words and keeps some for seen ones."""
    histogram = Counter(c for c in counts if c <= 2)
    n1, n2 = histogram[1], histogram[2]
    if n1 + n2 == 0:
        return 0.5
    return min(max(n1 / (n1 + 2 * n2), 0.1), 0.9)


class NgramLM:
    """Word n-gram language model with interpolated Kneser–Ney smoothing (Chen & Goodman's form,
    one discount per order).

    The highest order uses raw counts, lower orders continuation counts (in how many distinct
    contexts an n-gram follows a word), and the unigram level is interpolated with the uniform
    distribution over the vocabulary (the corpus words, ``</s>`` and ``<unk>``), so every word
    of the vocabulary has a positive probability and the probabilities of a context sum to 1.
    Captions are padded with ``order - 1`` start symbols; words not in the corpus read as ``<unk>``.
    """

    def __init__(self, captions: Iterable[str], order: int = 3) -> None:
        if order < 1:
            raise ValueError(f"n-gram order must be at least 1, got {order}")
        self.order = order
        grams: Counter = Counter()
        for caption in captions:
            seq = [BOS] * (order - 1) + words(caption) + [EOS]
            grams.update(zip(*(seq[i:] for i in range(order))))
        if not grams:
            raise DataError("the n-gram corpus has no captions")
        self.counts: list[dict[tuple[str, ...], int]] = [{} for _ in range(order + 1)]
        self.counts[order] = dict(grams)
        for k in range(order - 1, 0, -1):  # continuation counts: distinct left extensions
            self.counts[k] = dict(Counter(g[1:] for g in self.counts[k + 1]))
        self.totals: list[dict[tuple[str, ...], int]] = [{} for _ in range(order + 1)]
        self.types: list[dict[tuple[str, ...], int]] = [{} for _ in range(order + 1)]
        for k in range(1, order + 1):
            totals, types = Counter(), Counter()
            for gram, count in self.counts[k].items():
                totals[gram[:-1]] += count
                types[gram[:-1]] += 1
            self.totals[k], self.types[k] = dict(totals), dict(types)
        self.discounts = [0.0] + [_discount(self.counts[k].values()) for k in range(1, order + 1)]
        self.vocabulary = sorted({g[0] for g in self.counts[1]} | {EOS, UNK})
        self._known = set(self.vocabulary)

    @classmethod
    def from_file(cls, path: str | Path, order: int = 3) -> NgramLM:
        """The model of a caption corpus file (see :func:`read_corpus`)."""
        return cls(read_corpus(path), order)

    def _known_or_unk(self, word: str) -> str:
        return word if word in self._known else UNK

    def prob(self, word: str, context: Sequence[str] = ()) -> float:
        """P(word | the last ``order - 1`` words of ``context``); a short context is padded with ``<s>``."""
        word = self._known_or_unk(word)
        history = [BOS] * (self.order - 1) + [w if w == BOS else self._known_or_unk(w) for w in context]
        history = history[len(history) - (self.order - 1) :] if self.order > 1 else []
        p = 1.0 / len(self.vocabulary)
        for k in range(1, self.order + 1):
            h = tuple(history[len(history) - (k - 1) :]) if k > 1 else ()
            total = self.totals[k].get(h, 0)
            if total == 0:  # context never seen at this order: the lower order's estimate stands
                continue
            d = self.discounts[k]
            count = self.counts[k].get(h + (word,), 0)
            p = (max(count - d, 0.0) + d * self.types[k][h] * p) / total
        return p

    def score(self, caption: str) -> float:
        """Mean log-probability per token of ``caption`` (its words and the end token)."""
        tokens = words(caption) + [EOS]
        history: list[str] = []
        total = 0.0
        for token in tokens:
            total += math.log(self.prob(token, history))
            history.append(token)
        return total / len(tokens)

    def scores(self, captions: Sequence[str]) -> np.ndarray:
        """:meth:`score` of each caption, [N] float64."""
        return np.array([self.score(c) for c in captions], dtype=np.float64)


def _caption_of(record: object, where: str) -> str:
    if isinstance(record, str):
        return record
    if isinstance(record, dict):
        for key in ("caption", "text"):
            if isinstance(record.get(key), str):
                return record[key]
    raise DataError(f"{where}: expected a caption string or an object with a 'caption' (or 'text') string")


def read_corpus(path: str | Path) -> list[str]:
    """Captions for the n-gram model, by the file's extension.

    ``.jsonl``: one JSON value a line, a string or an object with ``caption`` (or ``text``);
    ``.json``: a list of those, or COCO's caption annotations (``{"annotations": [{"caption": ...}]}``,
    e.g. ``captions_train2017.json``; fitting on the val2017 captions would leak SugarCrepe's
    positives); anything else: plain text, one caption a line. Blank lines are skipped.
    """
    path = Path(path)
    text = read_text(path, "caption corpus")
    if path.suffix == ".jsonl":
        out = []
        for number, line in enumerate(text.splitlines(), 1):
            where = f"{path}: line {number}"
            if line.strip():
                out.append(_caption_of(parse_json(line, where, "caption record"), where))
    elif path.suffix == ".json":
        data = parse_json(text, path, "caption corpus")
        if isinstance(data, dict) and isinstance(data.get("annotations"), list):
            data = data["annotations"]
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of captions or COCO caption annotations")
        out = [_caption_of(record, f"{path}: item {i}") for i, record in enumerate(data)]
    else:
        out = text.splitlines()
    out = [c for c in out if c.strip()]
    if not out:
        raise DataError(f"{path}: the caption corpus has no captions")
    return out


# -- the model's own text side -------------------------------------------------------------------


@dataclass
class Plausibility:
    """Blind scores of texts by the evaluated model (higher = more plausible), or why there are none."""

    scores: torch.Tensor | None  # [M] float, on the CPU
    method: str  # "typicality", "blank_image_likelihood" or "skipped"
    reason: str = ""


def _decodes(objective: Objective) -> bool:
    return objective.captioner() is not None


@torch.no_grad()
def _blank_image_likelihood(
    objective: Objective, texts: Sequence[str], tokenizer: Callable, batch_size: int, image_size: int, precision: str
) -> torch.Tensor:
    device = device_of(objective)
    blank = torch.zeros(1, 3, image_size, image_size, device=device)  # the mean colour, normalised
    with autocast(objective, precision):
        context = objective.captioner().image_context(blank)
    tokens = tokenizer(list(texts))
    out = []
    for start in range(0, len(tokens), batch_size):
        chunk = tokens[start : start + batch_size].to(device).long()
        with autocast(objective, precision):
            ll = sequence_log_likelihood(
                objective.captioner().decoder, context.expand(len(chunk), *context.shape[1:]), chunk, objective.pad_id
            )
        out.append(ll.float().cpu())
    return torch.cat(out)


def text_tower_plausibility(
    objective: Objective,
    features: FeatureCache,
    texts: Sequence[str],
    tokenizer: Callable,
    batch_size: int,
    image_size: int | None = None,
    precision: str = "fp32",
) -> Plausibility:
    """Each text's plausibility by the model's text side alone (see the module docstring).

    ``texts`` must hold every candidate of the suite, positives and negatives in equal numbers:
    for an embedding objective the centroid is taken over them. A captioner needs
    ``image_size`` for its blank image; an objective that neither embeds texts nor decodes is
    skipped, with the reason.
    """
    if _decodes(objective):
        if image_size is None:
            return Plausibility(None, "skipped", "a captioner's blank-image baseline needs the image size")
        scores = _blank_image_likelihood(objective, texts, tokenizer, batch_size, image_size, precision)
        return Plausibility(scores, "blank_image_likelihood")
    embedded = features.texts(objective, texts, tokenizer, batch_size, precision)
    if embedded.dim() != 2 or not embedded.is_floating_point():
        shape = "x".join(str(s) for s in embedded.shape)
        return Plausibility(
            None, "skipped", f"{type(objective).__name__} neither embeds texts (features {shape}) nor decodes"
        )
    unit = F.normalize(embedded.float(), dim=-1)
    centroid = F.normalize(unit.mean(dim=0), dim=-1)
    return Plausibility((unit @ centroid).cpu(), "typicality")
