"""Tokenizers built from a config's tokenizer section, and how long they make a corpus's texts.

`vislang tokenizer stats` compares tokenizers on the texts a run would see: tokens per text
and how many texts the text tower's context length cuts, against a plain byte-level BPE of the
same vocabulary size, so a domain tokenizer's gain is measured where it matters.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from vislang.config import TokenizerConfig
from vislang.data.texts import TextsSource
from vislang.errors import DataError
from vislang.tokenizer_phrases import mine_phrases, normalise, read_phrases
from vislang.tokenizers import BPETokenizer, PhraseTokenizer


def build_from_section(section: TokenizerConfig, texts: Sequence[str], context_length: int) -> BPETokenizer:
    """The tokenizer ``section`` describes, trained on ``texts`` where it is trained: a saved
    file at ``path``, OpenAI's BPE, a byte-level BPE, or phrases (file and mined) over one."""
    if section.kind == "openai":
        return BPETokenizer.openai(section.path, context_length)
    if section.path:
        return BPETokenizer.load(section.path, context_length)
    if section.kind == "trained":
        return BPETokenizer.train(texts, section.vocab_size, context_length, section.lowercase)
    phrases = read_phrases(section.phrases, section.lowercase) if section.phrases else []
    if section.mine_phrases:
        normalised = [normalise(t, section.lowercase) for t in texts]
        mined = mine_phrases(normalised, section.mine_phrases, section.min_phrase_count, section.max_phrase_words)
        listed = set(phrases)
        phrases = phrases + [p for p in mined if p not in listed]
    return PhraseTokenizer.train_phrases(texts, phrases, section.vocab_size, context_length, section.lowercase)


def read_corpus(path: str | Path, column: str = "caption") -> list[str]:
    """The texts of ``path``, read as a ``kind: texts`` training source reads them: a ``.txt``
    file (one text per line, blank lines skipped) or a table (.csv, .tsv, .parquet) whose
    ``column`` holds them; texts that are not UTF-8 are left out. Problems are one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"corpus not found: {path}")
    source = TextsSource(path, column, seed=0, shuffle=False)
    return source.captions(source.size)


def token_counts(tokenizer: BPETokenizer, texts: Sequence[str]) -> list[int]:
    """Tokens of each text with ``<sot>`` and ``<eot>``, before any cut at the context length."""
    return [len(tokenizer.encode(t)) + 2 for t in texts]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation between order statistics."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def length_stats(counts: Sequence[int], context_length: int) -> dict:
    """Tokens per text (mean, median, p95, max) and the cut at ``context_length``: the share
    of texts longer than it and the tokens they lose, averaged over all texts."""
    lost = [max(0, c - context_length) for c in counts]
    return {
        "texts": len(counts),
        "mean": sum(counts) / len(counts),
        "median": percentile(counts, 50),
        "p95": percentile(counts, 95),
        "max": max(counts),
        "truncated_share": sum(1 for x in lost if x) / len(counts),
        "mean_tokens_lost": sum(lost) / len(counts),
    }


def compare(
    tokenizers: dict[str, BPETokenizer], texts: Sequence[str], context_length: int
) -> tuple[dict[str, dict], dict[str, list[int]]]:
    """Each tokenizer's :func:`length_stats` (with its vocabulary size) and raw counts."""
    counts = {name: token_counts(tok, texts) for name, tok in tokenizers.items()}
    stats = {
        name: {"vocab_size": tokenizers[name].vocab_size, **length_stats(c, context_length)}
        for name, c in counts.items()
    }
    return stats, counts


def markdown_table(stats: dict[str, dict], context_length: int) -> str:
    head = f"| tokenizer | vocab | mean | median | p95 | max | cut at {context_length} | tokens lost |"
    rows = [head, "|" + "---|" * 8]
    for name, s in stats.items():
        rows.append(
            f"| {name} | {s['vocab_size']} | {s['mean']:.1f} | {s['median']:.0f} | {s['p95']:.0f} | {s['max']} "
            f"| {100 * s['truncated_share']:.1f}% | {s['mean_tokens_lost']:.2f} |"
        )
    return "\n".join(rows)


def write_report(stats: dict[str, dict], counts: dict[str, list[int]], context_length: int, out: str | Path) -> None:
    """``out/stats.json`` and ``out/lengths.png``: one histogram of tokens per text for each
    tokenizer, the context length marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stats.json").write_text(json.dumps({"context_length": context_length, "tokenizers": stats}, indent=2))
    fig, axes = plt.subplots(len(counts), 1, figsize=(7, 2.4 * len(counts)), squeeze=False)
    top = max(max(c) for c in counts.values())
    bins = range(0, top + 2, max(1, (top + 1) // 60))
    for ax, (name, values) in zip(axes[:, 0], counts.items(), strict=True):
        ax.hist(values, bins=bins, color="tab:blue")
        ax.axvline(context_length, color="tab:red", linestyle="--", label=f"context length {context_length}")
        ax.set_title(f"{name}: mean {stats[name]['mean']:.1f} tokens", fontsize=10)
        ax.set_ylabel("texts")
        ax.legend(fontsize=8)
    axes[-1, 0].set_xlabel("tokens per text (with <sot> and <eot>)")
    fig.tight_layout()
    fig.savefig(out / "lengths.png", dpi=100)
    plt.close(fig)
