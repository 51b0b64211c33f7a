"""MetaCLIP's substring matching of texts against metadata entries, with one Aho–Corasick automaton.

The rule (MetaCLIP's): the text is wrapped in spaces, each of ``, . ; : ? !`` and the backtick
gets a space on either side, tabs and line breaks become spaces, and nothing is lower-cased; an
entry matches when " entry " occurs in the result. So "A hot dog." matches ``A``, ``hot dog``
and ``dog`` but not ``a``, "dogs, cats" does not match ``dog``, and "Adult T-shirt" matches
``T-shirt`` but not ``shirt``. A naive implementation tests every entry against every text;
here all " entry " patterns go into one automaton (pyahocorasick) that finds every occurrence,
overlapping ones included, in one pass over the text.
"""

from __future__ import annotations

from vislang.errors import DataError

# (character, replacement); no replacement brings in a character replaced later, so the order
# does not matter. Chained str.replace is faster here than str.translate (measured ~1.6x).
_SPACING = tuple((c, f" {c} ") for c in ",.;:?!`") + tuple((c, " ") for c in "\t\n\r")


def spaced(text: str) -> str:
    """The text as matching sees it."""
    text = f" {text} "
    for char, replacement in _SPACING:
        if char in text:
            text = text.replace(char, replacement)
    return text


class EntryMatcher:
    """Finds the ids (positions in ``entries``) of the entries a text matches, sorted."""

    def __init__(self, entries: list[str]) -> None:
        import ahocorasick

        self.size = len(entries)
        self.automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        ids: dict[str, int] = {}
        for entry_id, entry in enumerate(entries):
            pattern = f" {entry} "
            if pattern in ids:
                raise DataError(f"metadata entry {entry!r} appears twice (ids {ids[pattern]} and {entry_id})")
            ids[pattern] = entry_id
            self.automaton.add_word(pattern, entry_id)
        self.automaton.make_automaton()

    def __call__(self, text: str) -> list[int]:
        return sorted({entry_id for _, entry_id in self.automaton.iter(spaced(text))})


def naive_match(text: str, entries: list[str]) -> list[int]:
    """The rule applied entry by entry (the reference the automaton is tested against)."""
    t = spaced(text)
    return [i for i, entry in enumerate(entries) if f" {entry} " in t]
