"""Rule-based hard-negative captions (NegCLIP's swaps, FiGCLIP-style verb replacement).

A negative is a caption that reads like the true one but says something false about the
image. The rules work on free-form English with small word lists instead of a parser: a noun
phrase is a determiner ("a", "the", "two", ...) followed by up to four words, ending before a
relation phrase, a verb, a conjunction or punctuation; its last word is the head noun and the
words before it are attributes. Framing phrases ("a photo of") are not objects.

Rules (each returns ``None`` where it does not apply, and the caller counts that):
- ``relation``: exchange the two noun phrases around a relation ("a dog on a sofa" -> "a sofa on a dog");
- ``attribute``: exchange the attributes of two objects ("a red cube and a blue ball" -> "a blue cube and a red ball");
- ``noun``: exchange the head nouns of two objects ("a red cube and a blue ball" -> "a red ball and a blue cube");
- ``shuffle``: a random reordering of the words;
- ``verb``: replace a verb by a different action from :data:`VERB_ALTERNATIVES`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

DETERMINERS = frozenset(
    "a an the one two three four five six seven eight nine ten some several many this that these those "
    "his her its their our my your another each every".split()
)
# Relation phrases, longest first so that "to the left of" wins over "of".
RELATIONS: tuple[tuple[str, ...], ...] = tuple(
    sorted(
        (
            tuple(p.split())
            for p in (
                "to the left of",
                "to the right of",
                "on the left of",
                "on the right of",
                "in front of",
                "on top of",
                "in the middle of",
                "at the top of",
                "at the bottom of",
                "next to",
                "close to",
                "on the side of",
                "left of",
                "right of",
                "above",
                "below",
                "under",
                "underneath",
                "beneath",
                "over",
                "on",
                "in",
                "inside",
                "behind",
                "beside",
                "near",
                "by",
                "at",
                "against",
                "across from",
                "along",
                "with",
            )
        ),
        key=len,
        reverse=True,
    )
)
# Words that may sit between a noun phrase and its relation ("a cat is sitting under a table").
LINKING = frozenset(
    "is are was were be being sits sit sitting stands stand standing lies lie lying hangs hanging "
    "placed located parked seen shown".split()
)
BOUNDARIES = frozenset("and or but while as of that which who where , . ; : ! ?".split()) | LINKING
FRAMING = frozenset(
    "photo picture image view closeup close-up shot painting drawing illustration scene photograph".split()
)
# Verb -> actions that change the meaning (FiGCLIP-style replacement); -ing and 3rd-person forms.
VERB_ALTERNATIVES: dict[str, tuple[str, ...]] = {
    "sitting": ("standing", "lying", "jumping"),
    "standing": ("sitting", "lying", "running"),
    "lying": ("standing", "sitting", "jumping"),
    "walking": ("running", "sitting", "standing"),
    "running": ("walking", "sitting", "lying"),
    "riding": ("pushing", "walking", "carrying"),
    "holding": ("throwing", "dropping", "kicking"),
    "eating": ("smelling", "throwing", "holding"),
    "drinking": ("spilling", "pouring", "holding"),
    "throwing": ("catching", "holding", "kicking"),
    "catching": ("throwing", "dropping", "missing"),
    "carrying": ("dragging", "dropping", "pushing"),
    "pushing": ("pulling", "riding", "carrying"),
    "pulling": ("pushing", "carrying", "riding"),
    "playing": ("sleeping", "eating", "watching"),
    "watching": ("ignoring", "playing", "eating"),
    "looking": ("pointing", "shouting", "waving"),
    "sleeping": ("playing", "running", "eating"),
    "flying": ("falling", "landing", "sitting"),
    "swimming": ("drowning", "standing", "floating"),
    "cutting": ("eating", "holding", "washing"),
    "opening": ("closing", "breaking", "holding"),
    "closing": ("opening", "breaking", "holding"),
    "climbing": ("descending", "falling", "jumping"),
    "kicking": ("catching", "holding", "throwing"),
    "hugging": ("pushing", "hitting", "ignoring"),
    "talking": ("listening", "sleeping", "eating"),
    "smiling": ("crying", "frowning", "shouting"),
    "laughing": ("crying", "frowning", "sleeping"),
    "cooking": ("eating", "washing", "buying"),
    "sits": ("stands", "lies", "jumps"),
    "stands": ("sits", "lies", "runs"),
    "walks": ("runs", "sits", "stands"),
    "runs": ("walks", "sits", "stands"),
    "rides": ("pushes", "carries", "walks"),
    "holds": ("throws", "drops", "kicks"),
    "eats": ("throws", "smells", "holds"),
    "throws": ("catches", "holds", "kicks"),
    "carries": ("drags", "drops", "pushes"),
    "plays": ("sleeps", "eats", "watches"),
}
RULES = ("relation", "attribute", "noun", "shuffle", "verb")
_TOKEN = re.compile(r"[\w'-]+|[^\w\s]")


def split_words(text: str) -> list[str]:
    """Words and punctuation marks of a caption, in order."""
    return _TOKEN.findall(text)


@dataclass(frozen=True)
class Phrase:
    """Words ``start..end`` (exclusive) of a caption: determiner, attributes, head noun."""

    start: int
    end: int

    def attributes(self) -> slice:
        return slice(self.start + 1, self.end - 1)

    @property
    def head(self) -> int:
        return self.end - 1


def _relation_at(words: Sequence[str], i: int) -> int:
    """Length of the relation phrase starting at word ``i`` (0 if none)."""
    for phrase in RELATIONS:
        if tuple(w.lower() for w in words[i : i + len(phrase)]) == phrase:
            return len(phrase)
    return 0


def noun_phrases(words: Sequence[str]) -> list[Phrase]:
    """Determiner + up to four words, ended by a relation, a boundary word, a verb or the end."""
    phrases, i = [], 0
    while i < len(words):
        if words[i].lower() not in DETERMINERS:
            i += 1
            continue
        end = i + 1
        while (
            end < len(words)
            and end - i <= 4
            and words[end].lower() not in BOUNDARIES
            and words[end].lower() not in DETERMINERS
            and words[end].lower() not in VERB_ALTERNATIVES
            and words[end].lower() not in LINKING
            and not _relation_at(words, end)
        ):
            end += 1
        if end > i + 1 and words[end - 1].lower() not in FRAMING:
            phrases.append(Phrase(i, end))
        i = end
    return phrases


def _join(words: Sequence[str]) -> str:
    text = " ".join(words)
    return re.sub(r" ([,.;:!?])", r"\1", text)


def swap_relation(words: list[str], rng: np.random.Generator) -> list[str] | None:
    phrases = noun_phrases(words)
    options = []
    for a, b in zip(phrases, phrases[1:]):
        middle = [w.lower() for w in words[a.end : b.start]]
        while middle and middle[0] in LINKING:
            middle = middle[1:]
        if middle and _relation_at(middle, 0) == len(middle) and words[a.start : a.end] != words[b.start : b.end]:
            options.append((a, b))
    if not options:
        return None
    a, b = options[rng.integers(len(options))]
    return words[: a.start] + words[b.start : b.end] + words[a.end : b.start] + words[a.start : a.end] + words[b.end :]


def _two_phrases(phrases: list[Phrase], rng: np.random.Generator, ok: Callable[[Phrase, Phrase], bool]):
    pairs = [(a, b) for i, a in enumerate(phrases) for b in phrases[i + 1 :] if ok(a, b)]
    return pairs[rng.integers(len(pairs))] if pairs else None


def swap_attributes(words: list[str], rng: np.random.Generator) -> list[str] | None:
    def ok(a: Phrase, b: Phrase) -> bool:
        return (
            bool(words[a.attributes()])
            and bool(words[b.attributes()])
            and words[a.attributes()] != words[b.attributes()]
        )

    pair = _two_phrases(noun_phrases(words), rng, ok)
    if pair is None:
        return None
    a, b = pair
    return (
        words[: a.start + 1]
        + words[b.attributes()]
        + words[a.head : b.start + 1]
        + words[a.attributes()]
        + words[b.head :]
    )


def swap_nouns(words: list[str], rng: np.random.Generator) -> list[str] | None:
    pair = _two_phrases(noun_phrases(words), rng, lambda a, b: words[a.head].lower() != words[b.head].lower())
    if pair is None:
        return None
    a, b = pair
    out = list(words)
    out[a.head], out[b.head] = words[b.head], words[a.head]
    return out


def shuffle_words(words: list[str], rng: np.random.Generator) -> list[str] | None:
    if len(set(words)) < 2:
        return None
    for _ in range(10):
        out = [words[i] for i in rng.permutation(len(words))]
        if out != words:
            return out
    return None


def replace_verb(words: list[str], rng: np.random.Generator) -> list[str] | None:
    positions = [i for i, w in enumerate(words) if w.lower() in VERB_ALTERNATIVES]
    if not positions:
        return None
    i = positions[rng.integers(len(positions))]
    out = list(words)
    choices = VERB_ALTERNATIVES[words[i].lower()]
    out[i] = choices[rng.integers(len(choices))]
    return out


_RULE_FUNCTIONS = {
    "relation": swap_relation,
    "attribute": swap_attributes,
    "noun": swap_nouns,
    "shuffle": shuffle_words,
    "verb": replace_verb,
}


def negative_caption(caption: str, rules: Sequence[str], rng: np.random.Generator) -> tuple[str | None, str | None]:
    """A hard negative of ``caption`` by one applicable rule chosen at random, and the rule's
    name; ``(None, None)`` when no rule applies."""
    words = split_words(caption)
    order = [rules[i] for i in rng.permutation(len(rules))]
    for rule in order:
        out = _RULE_FUNCTIONS[rule](words, rng)
        if out is not None and out != words:
            return _join(_tidy(words, out)), rule
    return None, None


def _tidy(original: list[str], out: list[str]) -> list[str]:
    """Keep the original's capitalised first word and fix "a"/"an" before the words now after them."""
    out = list(out)
    if original and original[0][:1].isupper():
        out = [w.lower() if w.lower() in DETERMINERS else w for w in out]
        out[0] = out[0][:1].upper() + out[0][1:]
    for i, word in enumerate(out[:-1]):
        if word.lower() in ("a", "an"):
            article = "an" if out[i + 1][:1].lower() in "aeiou" else "a"
            out[i] = article.capitalize() if word[0].isupper() else article
    return out
