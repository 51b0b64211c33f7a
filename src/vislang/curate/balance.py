"""MetaCLIP's balancing: flatten the distribution of texts over metadata entries.

Entry ``e`` matched by ``count_e`` texts gets the sampling probability
``p_e = t / max(count_e, t)``: entries in the tail (fewer than ``t`` matches) keep every text,
head entries keep about ``t``. A text is kept with probability ``1 - prod(1 - p_e)`` over its
entries (each entry an independent chance to keep it); texts that match nothing are dropped.

Every random draw is a keyed hash of (seed, uid, text index), not a generator's state, so the
kept set depends only on the data and the seed: not on sharding, process count or engine.
"""

from __future__ import annotations

import hashlib

import numpy as np


def entry_probabilities(counts: np.ndarray, t: float) -> np.ndarray:
    """p_e = t / max(count_e, t) per entry (1 for entries with no match)."""
    counts = np.asarray(counts, dtype=np.float64)
    return t / np.maximum(counts, t)


def keep_probabilities(rows: np.ndarray, entries: np.ndarray, n_rows: int, probs: np.ndarray) -> np.ndarray:
    """``1 - prod_e (1 - p_e)`` per text, from the flat (row, entry) pairs of the matches."""
    with np.errstate(divide="ignore"):
        log_miss = np.log1p(-probs[entries])
    return -np.expm1(np.bincount(rows, weights=log_miss, minlength=n_rows))


def unit_draws(seed: int, keys: list[str]) -> np.ndarray:
    """A uniform [0, 1) number per key, a pure function of (seed, key): BLAKE2b keyed by the seed."""
    secret = seed.to_bytes(16, "little", signed=True)
    out = np.empty(len(keys), dtype=np.float64)
    for i, key in enumerate(keys):
        digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8, key=secret).digest()
        out[i] = (int.from_bytes(digest, "little") >> 11) * 2.0**-53
    return out


def threshold_for_tail_share(counts: np.ndarray, share: float) -> int:
    """The smallest t at which entries with fewer than t matches hold at least ``share`` of all
    matches (MetaCLIP reports the tail share its t gives)."""
    c = np.sort(np.asarray(counts, dtype=np.int64)[np.asarray(counts) > 0])
    if not len(c):
        raise ValueError("no entry has any match")
    if not 0.0 < share <= 1.0:
        raise ValueError(f"the tail share must be in (0, 1], got {share}")
    candidates = np.unique(c) + 1
    below = np.concatenate([[0], np.cumsum(c)])[np.searchsorted(c, candidates, side="left")]
    shares = below / c.sum()
    return int(candidates[np.argmax(shares >= share - 1e-12)])


def tail_share(counts: np.ndarray, t: float) -> float:
    """The share of all matches held by entries with fewer than ``t`` matches."""
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    return float(c[c < t].sum() / total) if total else 0.0
