"""Pure metrics of the video tasks: AUROC by the Mann-Whitney statistic, and the temporal probe's
credit (a clip against the same clip reversed)."""

from __future__ import annotations

import numpy as np

# Scores closer than this are a tie: a model that averages frames gives a clip and its reverse
# the same embedding up to float rounding, which must count as a tie, not as a coin toss.
TIE_TOLERANCE = 1e-5


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``, tied values sharing the mean of their ranks."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    # runs of equal values: each gets the mean of the positions it spans
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + 1 + end) / 2
    return ranks


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a random positive outscores a random
    negative, ties counting one half (the Mann-Whitney U statistic over n_pos * n_neg)."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUROC needs positives and negatives, got {n_pos} and {n_neg}")
    ranks = average_ranks(scores)
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def pair_labels(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every unordered pair (i < j) of items: (i, j, same group)."""
    groups = np.asarray(groups)
    i, j = np.triu_indices(len(groups), k=1)
    return i, j, groups[i] == groups[j]


def order_credit(forward: np.ndarray, reversed_: np.ndarray, tolerance: float = TIE_TOLERANCE) -> np.ndarray:
    """Per item: 1 where the caption scores the clip above its reverse, 0 below, 0.5 on a tie
    (within ``tolerance``)."""
    forward, reversed_ = np.asarray(forward, dtype=np.float64), np.asarray(reversed_, dtype=np.float64)
    credit = np.where(forward > reversed_, 1.0, 0.0)
    return np.where(np.abs(forward - reversed_) <= tolerance, 0.5, credit)
