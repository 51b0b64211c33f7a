"""Training sources as map-style datasets of whole batches: item ``b`` is batch ``b``.

A batch is a pure function of (config, batch index), so the stream resumes at any step
exactly, workers can build batches in any order, and the loader yields them in order.

Text fields of a batch: ``text`` [B, L] tokens; with hard negatives configured also
``text_neg`` [B, L] and ``text_neg_valid`` [B] (False where no rule applied). Counters go under
``counts`` ("skipped/<reason>", "negatives/<rule>", "negatives/none") and the loop sums them.

Sources:
- ``WorldBatches``: the built-in world (sample ``b * batch_size + i`` of the train split).
- ``TableBatches``: a CSV/TSV table of image paths and captions; position ``p`` of the stream
  is row ``perm_e[p mod N]`` of the seeded permutation of epoch ``e = p // N``. Unreadable
  images and empty captions are skipped and counted by reason.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vislang.data.negatives import negative_caption
from vislang.data.transforms import resize_center_crop, to_tensor
from vislang.data.world import World
from vislang.errors import DataError

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
        valid = torch.tensor([n is not None for n in negatives])
        fields["text_neg"] = tokenizer([n or "" for n in negatives])
        fields["text_neg_valid"] = valid
    return fields, counts


class WorldBatches(Dataset):
    def __init__(
        self, world: World, tokenizer: Tokenize, batch_size: int, mean, std, negative_rules: Sequence[str] = ()
    ) -> None:
        self.world, self.tokenizer, self.batch_size = world, tokenizer, batch_size
        self.mean, self.std, self.negative_rules = mean, std, tuple(negative_rules)

    def __len__(self) -> int:
        return 2**62 // self.batch_size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        start = index * self.batch_size
        samples = [self.world.sample("train", start + i) for i in range(self.batch_size)]
        images = np.stack([s[0] for s in samples])
        rng = np.random.default_rng([self.world.seed, 101, index])
        fields, counts = text_fields([s[1] for s in samples], self.tokenizer, self.negative_rules, rng)
        return {"image": to_tensor(images, self.mean, self.std), **fields, "counts": dict(counts)}

    def captions(self, n: int) -> list[str]:
        """Captions of the first ``n`` samples, to train a tokenizer on."""
        return [
            self.world.caption(self.world.sample_scene(rng := self.world.rng("train", i), "train"), rng)
            for i in range(n)
        ]


def read_table(path: str | Path, image_column: str, caption_column: str) -> tuple[list[Path], list[str]]:
    """Rows of a CSV (or TSV, by extension) file; image paths are relative to the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data.path not found: {path}")
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        missing = [c for c in (image_column, caption_column) if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: no column {missing[0]!r} (columns: {', '.join(reader.fieldnames or [])})")
        rows = [(row[image_column], row[caption_column]) for row in reader]
    if not rows:
        raise DataError(f"{path}: the table has no rows")
    return [path.parent / image for image, _ in rows], [caption or "" for _, caption in rows]


class TableBatches(Dataset):
    def __init__(
        self,
        images: list[Path],
        captions: list[str],
        tokenizer: Tokenize,
        batch_size: int,
        image_size: int,
        mean,
        std,
        seed: int,
        negative_rules: Sequence[str] = (),
    ) -> None:
        self.images, self.captions, self.tokenizer = images, captions, tokenizer
        self.batch_size, self.image_size, self.mean, self.std, self.seed = batch_size, image_size, mean, std, seed
        self.negative_rules = tuple(negative_rules)
        self._epoch, self._order = -1, np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        return 2**62 // self.batch_size

    def _row(self, position: int) -> int:
        epoch, offset = divmod(position, len(self.images))
        if self._epoch != epoch:
            self._epoch, self._order = epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.images))
        return int(self._order[offset])

    def _load(self, path: Path) -> np.ndarray:
        with Image.open(path) as image:
            return resize_center_crop(image, self.image_size)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        images, texts, counts = [], [], Counter()
        for position in range(index * self.batch_size, (index + 1) * self.batch_size):
            row = self._row(position)
            caption = self.captions[row].strip()
            if not caption:
                counts["skipped/empty_caption"] += 1
                continue
            try:
                images.append(self._load(self.images[row]))
            except FileNotFoundError:
                counts["skipped/missing_file"] += 1
                continue
            except (OSError, ValueError, Image.DecompressionBombError):
                counts["skipped/bad_image"] += 1
                continue
            texts.append(caption)
        batch = {}
        if images:
            rng = np.random.default_rng([self.seed, 101, index])
            fields, negative_counts = text_fields(texts, self.tokenizer, self.negative_rules, rng)
            counts.update(negative_counts)
            batch = {"image": to_tensor(np.stack(images), self.mean, self.std), **fields}
        return batch | {"counts": dict(counts)}
