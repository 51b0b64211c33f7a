"""Texts without images as a training source (``kind: texts``): the corpus of a text-only
objective such as ``lm`` (CONCH's unimodal text pretraining), and of the run's tokenizer.

A ``.txt`` file holds one text per line (blank lines are left out); any other path is read as
a table (.parquet/.csv/.tsv) and its first ``caption_columns`` column is the text. Samples are
``(None, text)``: batches of such a source carry ``text`` only. A line that is not UTF-8 is a
bad sample (skipped and counted), not a broken file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vislang.data.decode import decode_caption
from vislang.data.samples import RowOrder, decodable_captions, read_table
from vislang.data.source import RandomAccessSource
from vislang.errors import DataError, first_line


def read_lines(path: Path) -> list[bytes]:
    """The non-blank lines of a text file, undecoded (a bad line costs one sample)."""
    if not path.is_file():
        raise DataError(f"texts source not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"cannot read texts file {path}: {first_line(error)}") from None
    return [line for line in data.splitlines() if line.strip()]


class TextsSource(RandomAccessSource):
    """Texts in a seeded order per epoch (:class:`~vislang.data.samples.RowOrder`), as tables are."""

    def __init__(self, path: str | Path, column: str, seed: int, resampled: bool = False, shuffle: bool = True) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() == ".txt":
            self.texts: list = read_lines(self.path)
        else:  # a table: its text column stands in for the image column read_table wants
            self.texts = read_table(self.path, column, [column])[1][0].to_pylist()
        if not self.texts:
            raise DataError(f"{self.path}: no texts in it")
        if not decodable_captions(lambda i: self.texts[i], range(min(len(self.texts), 1000))):
            raise DataError(f"{self.path}: none of its first texts is usable text (UTF-8, not empty)")
        self.order = RowOrder(len(self.texts), seed, resampled, shuffle)

    @property
    def size(self) -> int:
        return len(self.texts)

    def describe(self) -> str:
        return f"{len(self.texts)} texts, no images ({self.path})"

    def get(self, position: int, rng: np.random.Generator) -> tuple[None, str]:
        """(None, text) of stream position ``position``; raises BadSample for an unusable text."""
        return None, decode_caption(self.texts[self.order.row(position)])

    def captions(self, n: int) -> list[str]:
        return decodable_captions(lambda i: self.texts[i], range(min(n, len(self.texts))))
