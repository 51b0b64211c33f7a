"""The filter protocol: a filter is a config section that scores samples and keeps some.

A pool is filtered in two steps. The **worker pass** (one task per pool file, local processes
or Ray) reads every sample once, computes the built-in features the chosen filters ask for
(:data:`FEATURES`) and runs each filter's own per-sample function (:meth:`FilterConfig.per_sample`);
the **decision** runs in the caller over the gathered table (:meth:`FilterConfig.keep`),
because some rules need the whole pool (a top fraction, k-means clusters). Splitting it so
keeps the expensive reading and encoding parallel and the global rules exact.

A filter is one :class:`FilterConfig` subclass (its options as validated fields) and one line
in :data:`vislang.curate.filters.FILTERS`; nothing else names it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vislang.config import Section

# The worker pass's built-in per-sample features (uid is always there): the caption, the image's
# size, and what the model gives (the image-caption cosine, the normalised image embedding).
FEATURES = frozenset({"caption", "width", "height", "clip_score", "image_embedding"})
MODEL_FEATURES = frozenset({"clip_score", "image_embedding"})


@dataclass(frozen=True)
class Sample:
    """One readable sample as a filter's per-sample function sees it in the worker pass
    (``data`` is the encoded image, for a filter that looks at pixels)."""

    uid: str
    caption: str
    width: int
    height: int
    data: bytes


PerSample = Callable[[Sample], Any]


class FilterConfig(Section):
    """One filter of ``vislang curate filter``: its options are the fields.

    Class attributes say what the filter needs: ``features`` (from :data:`FEATURES`, computed
    once for all filters), ``requires`` (optional third-party modules, checked before any work
    starts) and ``label`` (its count's key in ``filter.json``'s ``passed``; default: its name).
    """

    features: ClassVar[frozenset[str]] = frozenset()
    requires: ClassVar[tuple[str, ...]] = ()
    label: ClassVar[str | None] = None

    def needs_checkpoint(self) -> bool:
        """Whether this filter reads a model feature (so the pool run needs ``checkpoint``)."""
        return bool(self.features & MODEL_FEATURES)

    def per_sample(self) -> PerSample | None:
        """A function of one :class:`Sample`, run in the worker pass where the samples are read
        (in parallel), built there once per pool file (so it may load a resource, e.g. a WordNet
        index); its values reach :meth:`keep` as ``table["per_sample"]``. None (the default):
        the filter needs only built-in features."""
        return None

    def keep(self, table: dict[str, np.ndarray], context: FilterContext) -> np.ndarray:
        """The boolean keep-mask over the pool's readable samples, in table order. ``table`` holds
        ``uid``, ``width``, ``height``, the other requested :data:`FEATURES` but ``image_embedding``
        (that one is :meth:`FilterContext.image_embeddings`) and ``per_sample``, one array each."""
        raise NotImplementedError


def class_path(cls: type[FilterConfig]) -> str:
    """``module:QualName`` of a filter class: how a worker on another process or Ray node finds a
    filter that was registered at run time (the caller's registry is not there)."""
    return f"{cls.__module__}:{cls.__qualname__}"


def resolve_class(path: str) -> type[FilterConfig]:
    """The class :func:`class_path` names."""
    module, _, qualname = path.partition(":")
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


@dataclass
class FilterContext:
    """What a filter's :meth:`~FilterConfig.keep` takes from the pool run besides the table: the
    checkpoint, the worker pass's image embeddings, and a place for extra numbers that go into
    ``filter.json``'s ``passed`` after the filter's count (:meth:`note`)."""

    checkpoint: str | None
    embedding_files: list[Path]
    notes: dict[str, float] = field(default_factory=dict)
    _embeddings: np.ndarray | None = field(default=None, repr=False)

    def image_embeddings(self) -> np.ndarray:
        """[N, D] normalised image embeddings in table order (loaded once, for all filters)."""
        if self._embeddings is None:
            parts = [np.load(f) for f in self.embedding_files]
            self._embeddings = np.concatenate([p for p in parts if len(p)] or [np.zeros((0, 0), np.float32)])
        return self._embeddings

    def note(self, key: str, value: float) -> None:
        self.notes[key] = value

    def take_notes(self) -> dict[str, float]:
        notes, self.notes = self.notes, {}
        return notes
