"""Training batches as a map-style dataset: item ``b`` is batch ``b``, a pure function of
(config, b). So the stream resumes at any step exactly, workers build batches in any order, and
the loader yields them in order.

With several sources, batch ``b`` takes ``n_s`` samples from source ``s``, where
``(n_s) ~ Multinomial(batch_size, weights)`` is drawn from a generator seeded by ``b``; source
``s`` continues its own stream where its previous batches left it (the running sums of ``n_s``
are kept per process and rebuilt in O(b) draws after a resume). Proportions therefore match the
weights in expectation, and every source is read in full epochs at its own pace.

With ``world`` ranks, batch ``b`` is the union of the ranks' local batches: rank ``r`` draws its
own counts and takes the next positions after ranks ``< r``, so the ranks never read the same
sample. Streamed sources (:class:`~vislang.data.stream.ShardStream`) cannot seek: the batches
of worker ``b mod lanes`` of rank ``r`` read lane ``r * lanes + b mod lanes`` in order; a lane
met at another position (after a resume) is re-read up to it.

A batch: ``image`` [B, 3, S, S] (clips, ``data.frames`` > 1 or the motion world: [B, T, 3, S, S]), ``text`` [B, L] (+ ``text_neg``, ``text_neg_valid`` with hard
negatives; + ``label`` [B] from a labelled source, whose captions are class prompts, one
template per class and batch: :mod:`vislang.data.labelled`), and ``counts``: ``skipped/<reason>`` for every bad sample (a bad sample is skipped,
so a batch may be smaller than ``batch_size``), ``negatives/<rule>`` and ``source/<name>``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from vislang.data.decode import BadSample
from vislang.data.labelled import prompt_choice
from vislang.data.negatives import negative_caption
from vislang.data.source import Source
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
        sources: dict[str, Source],
        weights: Sequence[float],
        tokenizer: Tokenize,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        seed: int,
        negative_rules: Sequence[str] = (),
        rank: int = 0,
        world: int = 1,
        lanes: int = 1,
    ) -> None:
        self.names, self.sources = list(sources), list(sources.values())
        total = float(sum(weights))
        self.weights = np.asarray(weights, dtype=np.float64) / total
        self.tokenizer, self.batch_size, self.mean, self.std = tokenizer, batch_size, mean, std
        self.seed, self.negative_rules = seed, tuple(negative_rules)
        self.rank, self.world, self.lanes = rank, world, max(1, lanes)
        self._starts: dict[int, np.ndarray] = {0: np.zeros(len(self.sources), dtype=np.int64)}
        # streamed source -> (the batch it is positioned for, its position, lane, iterator)
        self._streams: dict[int, tuple[int, int, int, Iterator[dict]]] = {}

    def __len__(self) -> int:
        return 2**62 // self.batch_size

    def __getstate__(self) -> dict:  # open streams stay in the process that opened them
        return {**self.__dict__, "_streams": {}}

    def describe(self) -> str:
        parts = []
        for name, source, weight in zip(self.names, self.sources, self.weights):
            what = source.describe()
            if source.streaming:
                what += "; " + source.split(self.world * self.lanes)
            parts.append(f"{name} ({what}" + (f", weight {weight:.2f})" if len(self.sources) > 1 else ")"))
        ranks = f" per rank, {self.world} ranks" if self.world > 1 else ""
        return f"data{ranks}: " + "; ".join(parts)

    def _counts(self, index: int, rank: int | None = None) -> np.ndarray:
        """Samples of each source in rank ``rank``'s part of batch ``index``."""
        if len(self.sources) == 1:
            return np.array([self.batch_size])
        rank = self.rank if rank is None else rank
        key = [self.seed, 202, index] if self.world == 1 else [self.seed, 202, index, rank]
        return np.random.default_rng(key).multinomial(self.batch_size, self.weights)

    def _all_ranks(self, index: int) -> np.ndarray:
        return sum(self._counts(index, r) for r in range(self.world))

    def _start(self, index: int) -> np.ndarray:
        """Stream position of every random-access source at this rank's part of batch ``index``."""
        if len(self.sources) == 1:
            return np.array([(index * self.world + self.rank) * self.batch_size])
        known = max(k for k in self._starts if k <= index)
        start = self._starts[known].copy()
        for b in range(known, index):
            start += self._all_ranks(b)
        self._starts = {0: self._starts[0], known: self._starts[known], index: start}  # a small cache
        return start + sum((self._counts(index, r) for r in range(self.rank)), np.zeros_like(start))

    def _stream(self, s: int, index: int) -> tuple[Iterator[dict], int, int]:
        """The lane iterator of streamed source ``s`` positioned at batch ``index``, its
        position and its lane number."""
        lane = self.rank * self.lanes + index % self.lanes
        cached = self._streams.get(s)
        if cached is None or cached[0] != index or cached[2] != lane:
            position = sum(int(self._counts(b)[s]) for b in range(index % self.lanes, index, self.lanes))
            cached = (index, position, lane, self.sources[s].lane(lane, self.world * self.lanes, position))
            self._streams[s] = cached
        return cached[3], cached[1], lane

    def _samples(self, index: int) -> Iterator[tuple[str, list[int], Callable[[np.random.Generator], tuple]]]:
        """(source name, seed key, read) for every sample of this rank's part of batch ``index``;
        ``read(rng)`` returns (image, caption), or (image, caption, label) from a labelled
        source, or raises :class:`BadSample`."""
        starts, counts = self._start(index), self._counts(index)
        for s, (name, source, start, n) in enumerate(zip(self.names, self.sources, starts, counts)):
            if source.streaming:
                stream, position, lane = self._stream(s, index)
                for offset in range(int(n)):
                    raw = next(stream)
                    key = [self.seed, 304, lane, position + offset]
                    yield name, key, lambda rng, raw=raw, src=source: src.decode(raw, rng)
                self._streams[s] = (index + self.lanes, position + int(n), lane, stream)
            elif source.labelled:
                for position in range(int(start), int(start + n)):
                    yield (
                        name,
                        [self.seed, 303, position],
                        lambda rng, p=position, src=source: self._prompted(src, index, *src.get(p, rng)),
                    )
            else:
                for position in range(int(start), int(start + n)):
                    yield name, [self.seed, 303, position], lambda rng, p=position, src=source: src.get(p, rng)

    def _prompted(self, source: Source, index: int, image: np.ndarray, label: int) -> tuple[np.ndarray, str, int]:
        """A labelled sample with its class's prompt of batch ``index`` as the caption."""
        classes = source.classes
        return image, classes.prompt(label, prompt_choice(self.seed, index, label, len(classes.templates))), label

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, 101, index] + ([self.rank] if self.world > 1 else []))
        images, captions, labels, tally = [], [], [], Counter()
        for name, key, read in self._samples(index):
            try:
                image, caption, *label = read(np.random.default_rng(key))
            except BadSample as bad:
                tally[f"skipped/{bad.reason}"] += 1
                continue
            if image is not None:  # a texts source has captions only
                images.append(image)
            captions.append(caption)
            labels += label
            if len(self.sources) > 1:
                tally[f"source/{name}"] += 1
        batch: dict = {}
        if captions:
            fields, negative_counts = text_fields(captions, self.tokenizer, self.negative_rules, rng)
            tally.update(negative_counts)
            batch = {"image": to_tensor(np.stack(images), self.mean, self.std), **fields} if images else fields
            if labels:
                batch["label"] = torch.tensor(labels)
        return batch | {"counts": dict(tally)}
