"""Training batches as a map-style dataset: item ``b`` is batch ``b``, a pure function of
(config, b). So the stream resumes at any step exactly, workers build batches in any order, and
the loader yields them in order.

With several sources, batch ``b`` takes ``n_s`` samples from source ``s``, where
``(n_s) ~ Multinomial(batch_size, weights)`` is drawn from a generator seeded by ``b``; source
``s`` continues its own stream where its previous batches left it (the running sums of ``n_s``
are kept per process and rebuilt in O(b) draws after a resume). Proportions therefore match the
weights in expectation, and every source is read in full epochs at its own pace.

A batch: ``image`` [B, 3, S, S], ``text`` [B, L] (+ ``text_neg``, ``text_neg_valid`` with hard
negatives), and ``counts``: ``skipped/<reason>`` for every bad sample (a bad sample is skipped,
so a batch may be smaller than ``batch_size``), ``negatives/<rule>`` and ``source/<name>``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from vislang.data.decode import BadSample
from vislang.data.negatives import negative_caption
from vislang.data.transforms import to_tensor

Tokenize = Callable[[Sequence[str]], torch.Tensor]


def text_fields(
    captions: Sequence[str], tokenizer: Tokenize, negative_rules: Sequence[str], rng: np.random.Generator
) -> tuple[dict[str, torch.Tensor], Counter]:
    """Tokenised captions and, if ``negative_rules`` is not empty, one hard negative per caption."""
    fields = {"text": tokenizer(captions)}
    counts: Counter[str] = Counter()
    if negative_rules:
        negatives = []
        for caption in captions:
            negative, rule = negative_caption(caption, negative_rules, rng)
            counts[f"negatives/{rule or 'none'}"] += 1
            negatives.append(negative)
        fields["text_neg"] = tokenizer([n or "" for n in negatives])
        fields["text_neg_valid"] = torch.tensor([n is not None for n in negatives])
    return fields, counts


class Batches(Dataset):
    def __init__(
        self,
        sources: dict[str, object],
        weights: Sequence[float],
        tokenizer: Tokenize,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        seed: int,
        negative_rules: Sequence[str] = (),
    ) -> None:
        self.names, self.sources = list(sources), list(sources.values())
        total = float(sum(weights))
        self.weights = np.asarray(weights, dtype=np.float64) / total
        self.tokenizer, self.batch_size, self.mean, self.std = tokenizer, batch_size, mean, std
        self.seed, self.negative_rules = seed, tuple(negative_rules)
        self._starts: dict[int, np.ndarray] = {0: np.zeros(len(self.sources), dtype=np.int64)}

    def __len__(self) -> int:
        return 2**62 // self.batch_size

    def describe(self) -> str:
        parts = []
        for name, source, weight in zip(self.names, self.sources, self.weights):
            if hasattr(source, "describe"):
                what = source.describe()
            else:
                what = f"{len(source)} samples" if hasattr(source, "__len__") else "procedural"
            parts.append(f"{name} ({what}" + (f", weight {weight:.2f})" if len(self.sources) > 1 else ")"))
        return "data: " + "; ".join(parts)

    def _counts(self, index: int) -> np.ndarray:
        if len(self.sources) == 1:
            return np.array([self.batch_size])
        return np.random.default_rng([self.seed, 202, index]).multinomial(self.batch_size, self.weights)

    def _start(self, index: int) -> np.ndarray:
        """Stream position of every source at the start of batch ``index``."""
        if len(self.sources) == 1:
            return np.array([index * self.batch_size])
        known = max(k for k in self._starts if k <= index)
        start = self._starts[known].copy()
        for b in range(known, index):
            start += self._counts(b)
        self._starts = {0: self._starts[0], known: self._starts[known], index: start}  # a small cache
        return start

    def __getitem__(self, index: int) -> dict:
        starts, counts = self._start(index), self._counts(index)
        rng = np.random.default_rng([self.seed, 101, index])
        images, captions, tally = [], [], Counter()
        for name, source, start, n in zip(self.names, self.sources, starts, counts):
            for position in range(int(start), int(start + n)):
                try:
                    image, caption = source.get(position, np.random.default_rng([self.seed, 303, position]))
                except BadSample as bad:
                    tally[f"skipped/{bad.reason}"] += 1
                    continue
                images.append(image)
                captions.append(caption)
                if len(self.sources) > 1:
                    tally[f"source/{name}"] += 1
        batch: dict = {}
        if images:
            fields, negative_counts = text_fields(captions, self.tokenizer, self.negative_rules, rng)
            tally.update(negative_counts)
            batch = {"image": to_tensor(np.stack(images), self.mean, self.std), **fields}
        return batch | {"counts": dict(tally)}
