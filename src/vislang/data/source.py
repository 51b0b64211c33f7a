"""What every training source is: the members batches, the loader, evaluation and inspection use.

Two ways of reading exist, and every kind declares its own with ``streaming``:

- :class:`RandomAccessSource` (the world, tables, folders, local shards): ``get(position, rng)``
  is sample ``position`` of the source's endless stream, a pure function of the position, so a
  batch can be built for any step in any process.
- :class:`StreamedSource` (streamed shards): no seeking; batches take raw samples in order from
  a ``lane`` and ``decode`` them, and a lane met at another position is re-read up to it.

Callers branch on these members, never on which attributes an object happens to have.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import ClassVar

import numpy as np

from vislang.data.decode import SampleDecoder


class Source(ABC):
    streaming: ClassVar[bool]
    # samples are (image, label) with a ClassTask in ``classes`` (vislang.data.labelled)
    labelled: ClassVar[bool] = False
    # how raw samples become (image, caption); None where there is nothing to decode (the world)
    decoder: SampleDecoder | None = None

    @property
    @abstractmethod
    def size(self) -> int | None:
        """Samples in one pass over the source; None for the endless world (or unknown sizes)."""

    @abstractmethod
    def describe(self) -> str:
        """What the source holds, in a few words for the run's log."""

    @abstractmethod
    def captions(self, n: int) -> list[str]:
        """Up to ``n`` usable captions, cheaply (no images decoded), to train a tokenizer on."""


class RandomAccessSource(Source):
    streaming: ClassVar[bool] = False

    @abstractmethod
    def get(self, position: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """Sample ``position`` of the stream as (uint8 image [S, S, 3], caption), or raises
        :class:`~vislang.data.decode.BadSample`; ``rng`` is seeded by the position."""


class StreamedSource(Source):
    streaming: ClassVar[bool] = True

    @abstractmethod
    def lane(self, lane: int, lanes: int, skip: int = 0) -> Iterator[dict]:
        """Raw samples of lane ``lane`` of ``lanes`` from position ``skip`` on."""

    @abstractmethod
    def decode(self, raw: dict, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """A raw sample of a lane as (uint8 image [S, S, 3], caption), or raises ``BadSample``."""

    @abstractmethod
    def split(self, lanes: int) -> str:
        """How the source is spread over ``lanes`` lanes, for the log."""

    @abstractmethod
    def one_pass(self) -> Iterator[dict]:
        """Raw samples of one pass in stored order (held-out evaluation, usability checks)."""
