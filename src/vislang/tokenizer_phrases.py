"""Domain phrases for the ``regex`` tokenizer: normalising text, reading a phrase list, learning
one from a corpus, and cutting a text into phrases and the free text between them.

Report-like corpora (echocardiography reports, radiology findings) repeat a small set of long
phrases. Giving each such phrase one token, as EchoCLIP's regular-expression tokenizer does,
makes a report a few tokens long where a byte-level BPE needs dozens, so fewer reports are cut
at the text tower's context length. Everything here is plain Python on strings; the tokenizer
that assigns ids is :class:`vislang.tokenizers.PhraseTokenizer`.

A phrase stands for itself *with the space before it* (as GPT-2's ``Ġword`` tokens do): the
text is matched with one space put in front, and a phrase matches only after a space and
before a non-word character or the end, so the round trip is exact on normalised text.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from vislang.errors import ConfigError

PHRASES_PER_ROUND = 16  # phrases accepted per counting round of mining (then counted again)


def normalise(text: str, lowercase: bool = True) -> str:
    """What the regex tokenizer reads of ``text`` and gives back on decoding: Unicode NFC,
    lower-cased when ``lowercase``, whitespace runs made one space, stripped."""
    text = unicodedata.normalize("NFC", text)
    if lowercase:
        text = text.lower()
    return " ".join(text.split())


def clean_phrases(phrases: Iterable[str], lowercase: bool = True) -> list[str]:
    """``phrases`` normalised as texts are, empty ones dropped, each kept once, in first order."""
    seen: dict[str, None] = {}
    for phrase in phrases:
        phrase = normalise(phrase, lowercase)
        if phrase:
            seen.setdefault(phrase, None)
    return list(seen)


def read_phrases(path: str | Path, lowercase: bool = True) -> list[str]:
    """A phrases file: one domain phrase per line (blank lines and lines starting with ``#``
    skipped). A missing, unreadable or phrase-less file is one line naming it."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"tokenizer.phrases: file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"tokenizer.phrases: cannot read {path}: {error}") from None
    phrases = clean_phrases((line for line in lines if not line.lstrip().startswith("#")), lowercase)
    if not phrases:
        raise ConfigError(f"tokenizer.phrases: {path} holds no phrases (one phrase per line)")
    return phrases


class PhraseMatcher:
    """Cuts a normalised text into pieces: a phrase's index (an int) or free text (a str).

    Matching is longest phrase first: the alternation lists longer phrases first, and Python's
    ``re`` takes the first alternative that matches at the leftmost position."""

    def __init__(self, phrases: Sequence[str]) -> None:
        self.phrases = list(phrases)
        self.index = {phrase: i for i, phrase in enumerate(self.phrases)}
        ordered = sorted(self.phrases, key=len, reverse=True)
        alternation = "|".join(re.escape(p) for p in ordered)
        self.pattern = re.compile(f" ({alternation})(?!\\w)") if ordered else None

    def pieces(self, text: str) -> list[int | str]:
        """The pieces of ``" " + text`` (``text`` already normalised): free text keeps its spaces,
        a phrase piece stands for a space and the phrase."""
        spaced = " " + text
        if self.pattern is None:
            return [spaced]
        out: list[int | str] = []
        start = 0
        for match in self.pattern.finditer(spaced):
            if match.start() > start:
                out.append(spaced[start : match.start()])
            out.append(self.index[match.group(1)])
            start = match.end()
        if start < len(spaced):
            out.append(spaced[start:])
        return out

    def free_text(self, texts: Iterable[str]) -> list[str]:
        """The free-text pieces of ``texts``: what the BPE beneath the phrases is trained on."""
        return [piece for text in texts for piece in self.pieces(text) if isinstance(piece, str)]


def _units(matcher: PhraseMatcher, text: str) -> list[str]:
    """``text`` as units for mining: each phrase found is one unit, other words one each."""
    units: list[str] = []
    for piece in matcher.pieces(text):
        if isinstance(piece, int):
            units.append(matcher.phrases[piece])
        else:
            units.extend(piece.split())
    return units


def _count_ngrams(texts: Sequence[str], matcher: PhraseMatcher, max_words: int) -> Counter:
    """Occurrences of every run of 2 or more units of at most ``max_words`` words in all."""
    counts: Counter = Counter()
    for text in texts:
        units = _units(matcher, text)
        words = [unit.count(" ") + 1 for unit in units]
        for start in range(len(units)):
            total = words[start]
            for end in range(start + 1, len(units)):
                total += words[end]
                if total > max_words:
                    break
                counts[" ".join(units[start : end + 1])] += 1
    return counts


def _overlap(a: str, b: str) -> bool:
    """Whether runs ``a`` and ``b`` could claim the same words: one holds the other, or one's
    last words are the other's first."""
    if f" {b} " in f" {a} " or f" {a} " in f" {b} ":
        return True
    x, y = a.split(" "), b.split(" ")
    return any(x[-k:] == y[:k] or y[-k:] == x[:k] for k in range(1, min(len(x), len(y))))


def mine_phrases(texts: Sequence[str], count: int, min_count: int = 5, max_words: int = 8) -> list[str]:
    """Up to ``count`` frequent phrases of ``texts`` (normalised): runs of 2 to ``max_words``
    words seen at least ``min_count`` times, scored by the tokens one would save (occurrences
    times units merged). Greedy and non-overlapping: each round accepts the best runs that do
    not contain one another, then counts again with the accepted phrases as single units, so a
    phrase's parts are not chosen again for the same occurrences."""
    chosen: list[str] = []
    while len(chosen) < count:
        matcher = PhraseMatcher(chosen)
        counts = _count_ngrams(texts, matcher, max_words)
        scored = sorted(
            ((n * (len(_units(matcher, run)) - 1), run) for run, n in counts.items() if n >= min_count),
            reverse=True,
        )
        picked: list[str] = []
        for score, run in scored:
            if score <= 0 or len(picked) == min(PHRASES_PER_ROUND, count - len(chosen)):
                break
            if run in matcher.index or any(_overlap(run, p) for p in picked):
                continue
            picked.append(run)
        if not picked:
            break
        chosen.extend(picked)
    return chosen
