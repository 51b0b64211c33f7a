"""Curation filters by name, each with its own validated config, and their intersection over a pool.

``vislang curate filter`` (and :func:`filter_pool`) takes ``{name: options}``: the names are
:data:`FILTERS`, the options each filter's config fields (``{"basic": {}, "clip_score":
{"fraction": 0.3}}``). DataComp's baselines are :mod:`~vislang.curate.filters.datacomp`; the
protocol (what a filter asks of the worker pass and how it decides) is
:mod:`~vislang.curate.filters.base`; the pool run is :mod:`~vislang.curate.filters.pool`.
A new filter is a :class:`FilterConfig` subclass and one line in :data:`FILTERS`.
"""

from vislang.curate.filters.base import FEATURES, FilterConfig, FilterContext, Sample
from vislang.curate.filters.datacomp import (
    BasicFilter,
    ClipScoreFilter,
    ImageFilter,
    TextFilter,
    WordNetNouns,
    basic_rules,
    fraction_threshold,
    image_cluster_keep,
)
from vislang.curate.filters.pool import features_file, filter_pool, write_subset
from vislang.curate.filters.registry import FILTERS, build_filters, read_filters

__all__ = [
    "FEATURES",
    "FILTERS",
    "BasicFilter",
    "ClipScoreFilter",
    "FilterConfig",
    "FilterContext",
    "ImageFilter",
    "Sample",
    "TextFilter",
    "WordNetNouns",
    "basic_rules",
    "build_filters",
    "features_file",
    "filter_pool",
    "fraction_threshold",
    "image_cluster_keep",
    "read_filters",
    "write_subset",
]
