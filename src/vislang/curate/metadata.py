"""MetaCLIP-style metadata: the list of entries (concepts) that captions are matched against.

MetaCLIP's list is the union of WordNet synset names, Wikipedia unigrams, bigrams and article
titles, which a user supplies as text files (one entry per line), plus the strings "0".."99".
The WordNet part is read from WordNet 3.0's ``data.noun|verb|adj|adv`` files (Debian's
``wordnet-base`` installs them in ``/usr/share/wordnet``): each synset's name as NLTK forms it
(its first lemma, lower-cased, without an adjective marker such as ``(a)``), cut before the
first "." and with "_" turned into spaces.

Entry ids are positions in the sorted, de-duplicated list, so the same inputs give the same
file whatever their order. A released MetaCLIP ``metadata.json`` (a JSON list of strings) is
used as it is, its order defining the ids.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from vislang.errors import DataError

WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
DEFAULT_WORDNET = Path("/usr/share/wordnet")
_MARKER = re.compile(r"\((a|p|ip)\)$")


def wordnet_entries(directory: str | Path = DEFAULT_WORDNET) -> set[str]:
    """Every synset's name stem in the WordNet data files under ``directory``."""
    directory = Path(directory)
    files = [directory / name for name in WORDNET_FILES if (directory / name).is_file()]
    if not files:
        raise DataError(f"{directory}: no WordNet data files ({', '.join(WORDNET_FILES)}); install wordnet-base")
    entries: set[str] = set()
    for path in files:
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if line.startswith("  ") or not line.strip():
                    continue  # the licence header
                fields = line.split(" ", 5)
                if len(fields) < 5:
                    raise DataError(f"{path}: not a WordNet data line: {line[:60]!r}")
                lemma = _MARKER.sub("", fields[4]).lower()
                entries.add(lemma.split(".")[0].replace("_", " "))
    entries.discard("")
    return entries


def read_list(path: str | Path) -> set[str]:
    """Entries of a text file, one per line (surrounding whitespace dropped, empty lines skipped)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read the entry list {path}: {error}") from None
    return {line.strip() for line in lines if line.strip()}


def build_metadata(wordnet: str | Path | None, lists: list[str | Path], numbers: bool = True) -> list[str]:
    """The sorted union of the WordNet entries, the given lists and "0".."99"."""
    entries: set[str] = set()
    if wordnet is not None:
        entries |= wordnet_entries(wordnet)
    for path in lists:
        entries |= read_list(path)
    if numbers:
        entries |= {str(i) for i in range(100)}
    if not entries:
        raise DataError("no metadata entries: give a WordNet directory or entry lists")
    return sorted(entries)


def write_metadata(entries: list[str], path: str | Path) -> None:
    Path(path).write_text(json.dumps(entries, ensure_ascii=False) + "\n", encoding="utf-8")


def load_metadata(path: str | Path) -> list[str]:
    """Entries of a metadata file: a JSON list of strings (MetaCLIP's ``metadata.json``, or what
    :func:`write_metadata` wrote) or a text file with one entry per line. Ids are positions."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read metadata {path}: {error}") from None
    if path.suffix == ".json":
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}: not JSON ({error})") from None
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise DataError(f"{path}: metadata must be a JSON list of strings")
    else:
        entries = [line.strip() for line in text.splitlines() if line.strip()]
    if not entries:
        raise DataError(f"{path}: no metadata entries")
    return entries
