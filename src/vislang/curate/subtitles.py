"""Narration from subtitle files: SubRip (``.srt``) and WebVTT (``.vtt``) cues, and the rules that
decide which narration is worth a training caption.

Both formats are parsed by one small line-by-line reader because the narration of a video is only
as good as its timings: a cue whose timing line cannot be read would silently shift or swallow
text, so a malformed file is a :class:`~vislang.errors.DataError` naming the file and the line.
Accepted timestamps are ``hh:mm:ss,mmm`` and ``hh:mm:ss.mmm`` in both formats (either separator:
real files mix them), hours optional (``mm:ss.mmm``, as WebVTT allows), minutes and seconds below
60. A cue's text lines are joined with single spaces; markup (``<i>``, ``<b>``, ``<font ...>``,
WebVTT's ``<v Speaker>``, ``<c.class>`` and in-cue ``<00:01.000>`` timestamps, SubRip's ``{\\an8}``)
is removed and HTML entities are decoded. WebVTT's header, ``NOTE``, ``STYLE`` and ``REGION``
blocks, cue identifiers and cue settings (``align:start`` ...) are skipped.

:class:`NarrationRules` is what a user may set about the text (a YAML/JSON file or flags): filler
phrases ("um", "okay so") that are stripped out, and the minimum words and characters of what is
left; :func:`apply_rules` gives the kept text or the reason it was dropped.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from vislang.config.base import Section, build_section, read_yaml
from vislang.errors import ConfigError, DataError
from vislang.files import read_text

SUBTITLE_SUFFIXES = (".srt", ".vtt")
_TIMESTAMP = r"(?:(\d+):)?([0-5]\d):([0-5]\d)[,.](\d{3})"
_TIMING = re.compile(rf"^\s*{_TIMESTAMP}\s*-->\s*{_TIMESTAMP}(?:\s+.*)?$")
_TAG = re.compile(r"<[^>]*>|\{\\[^}]*\}")
_SPACES = re.compile(r"\s+")
_VTT_SKIPPED_BLOCKS = ("NOTE", "STYLE", "REGION")


@dataclass(frozen=True)
class Cue:
    """One subtitle cue: its position among the file's cues (0-based), times in seconds, clean text."""

    index: int
    start: float
    end: float
    text: str


def clean_cue_text(lines: list[str]) -> str:
    """The cue's lines as one line of plain text: markup removed, entities decoded, spaces collapsed."""
    text = " ".join(_TAG.sub("", line) for line in lines)
    return _SPACES.sub(" ", html.unescape(text).replace("\u00a0", " ")).strip()


def _seconds(hours: str | None, minutes: str, seconds: str, millis: str) -> float:
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(millis) / 1000


def _timing(line: str, source: str, number: int) -> tuple[float, float] | None:
    """(start, end) of a timing line; None when the line is not one (it has no ``-->``)."""
    if "-->" not in line:
        return None
    match = _TIMING.match(line)
    if match is None:
        raise DataError(
            f"{source}: line {number}: not a cue timing 'hh:mm:ss,mmm --> hh:mm:ss,mmm' (got {line.strip()!r})"
        )
    groups = match.groups()
    start, end = _seconds(*groups[:4]), _seconds(*groups[4:])
    if end < start:
        raise DataError(f"{source}: line {number}: the cue ends before it starts ({line.strip()!r})")
    return start, end


def _blocks(text: str) -> list[tuple[int, list[str]]]:
    """The file's blank-line separated blocks as (line number of the first line, lines)."""
    blocks: list[tuple[int, list[str]]] = []
    current: list[str] = []
    first = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            if not current:
                first = number
            current.append(line.rstrip())
        elif current:
            blocks.append((first, current))
            current = []
    if current:
        blocks.append((first, current))
    return blocks


def parse_srt(text: str, source: str = "<srt>") -> list[Cue]:
    """The cues of SubRip text: blocks of an optional number line, a timing line and text lines."""
    cues: list[Cue] = []
    for first, lines in _blocks(text):
        at = 1 if lines[0].strip().isdigit() else 0
        timing = _timing(lines[at], source, first + at) if at < len(lines) else None
        if timing is None:
            what = "a timing line after the cue number" if at else "a cue number or timing line"
            got = lines[at].strip() if at < len(lines) else "the end of the block"
            raise DataError(f"{source}: line {first + at}: expected {what} (got {got!r})")
        cues.append(Cue(len(cues), *timing, clean_cue_text(lines[at + 1 :])))
    return cues


def parse_vtt(text: str, source: str = "<vtt>") -> list[Cue]:
    """The cues of WebVTT text: after the ``WEBVTT`` header, blocks of an optional identifier line,
    a timing line (with optional settings) and payload lines; comment and style blocks skipped."""
    blocks = _blocks(text)
    header = blocks[0][1][0] if blocks else ""
    if not blocks or blocks[0][0] != 1 or not re.match(r"^WEBVTT(?:[ \t].*)?$", header):
        raise DataError(f"{source}: line 1: a WebVTT file starts with 'WEBVTT' (got {header[:40]!r})")
    for offset, line in enumerate(blocks[0][1]):
        if "-->" in line:
            raise DataError(f"{source}: line {1 + offset}: a blank line must separate the header from the first cue")
    cues: list[Cue] = []
    for first, lines in blocks[1:]:
        word = lines[0].split(maxsplit=1)[0] if lines[0].strip() else ""
        if word in _VTT_SKIPPED_BLOCKS and "-->" not in lines[0]:
            continue
        at = 0 if "-->" in lines[0] else 1  # a first line without an arrow is the cue's identifier
        timing = _timing(lines[at], source, first + at) if at < len(lines) else None
        if timing is None:
            got = lines[at].strip() if at < len(lines) else "the end of the block"
            raise DataError(f"{source}: line {first + at}: expected a cue timing line (got {got!r})")
        cues.append(Cue(len(cues), *timing, clean_cue_text(lines[at + 1 :])))
    return cues


def read_subtitles(path: str | Path) -> list[Cue]:
    """The cues of a ``.srt`` or ``.vtt`` file (chosen by its suffix), in file order."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUBTITLE_SUFFIXES:
        raise DataError(f"{path}: not a subtitle file (expected {' or '.join(SUBTITLE_SUFFIXES)})")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: subtitle file not found") from None
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror or type(error).__name__})") from None
    except UnicodeDecodeError as error:
        line = text_line_of(path.read_bytes(), error.start)
        raise DataError(f"{path}: line {line}: not UTF-8 text") from None
    return parse_srt(text, str(path)) if suffix == ".srt" else parse_vtt(text, str(path))


def text_line_of(data: bytes, offset: int) -> int:
    """The 1-based line number of byte ``offset``."""
    return data.count(b"\n", 0, offset) + 1


# -- narration rules ---------------------------------------------------------------------------

DEFAULT_FILLERS = ["um", "uh", "uhm", "er", "erm", "hmm", "mm-hmm", "okay so", "let's see", "you know"]


class NarrationRules(Section):
    """Which narration becomes a caption: fillers out, then enough words and characters left."""

    fillers: list[str] = Field(
        default_factory=lambda: list(DEFAULT_FILLERS),
        description="filler phrases, matched as whole words, case and punctuation aside; a cue made only "
        "of fillers is left out of its window, and a window of nothing else is dropped (only_filler)",
    )
    strip_fillers: bool = Field(True, description="remove the filler phrases from the kept text")
    min_words: int = Field(3, ge=0, description="drop a text with fewer words than this (too_few_words)")
    min_chars: int = Field(10, ge=0, description="drop a text with fewer characters than this (too_short)")


def read_rules(path: str | Path | None, overrides: dict) -> NarrationRules:
    """The rules of a YAML or JSON mapping file (None: the defaults) with ``overrides`` (the flags
    that were given) on top; a bad file or value is one line naming the file and key."""
    raw = {}
    if path is not None:
        raw = read_yaml(read_text(path, "rules file", ConfigError), str(path))
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the rules must be a mapping (fillers, strip_fillers, min_words, min_chars)")
    return build_section(NarrationRules, {**raw, **overrides}, [], str(path) if path is not None else "rules")


class FillerStripper:
    """Removes filler phrases (whole words, any case, with the punctuation that follows them)."""

    def __init__(self, fillers: list[str]) -> None:
        words = [re.findall(r"[\w'-]+", f.lower().replace("\u2019", "'")) for f in fillers]
        words = sorted((w for w in words if w), key=len, reverse=True)  # "okay so" before "okay"
        phrases = [r"[\s,.!?;:…-]*".join(re.escape(w) for w in phrase) for phrase in words]
        self.pattern = (
            re.compile(r"(?<![\w'])(?:" + "|".join(phrases) + r")(?![\w'])[\s,.!?;:…-]*", re.IGNORECASE)
            if phrases
            else None
        )

    def remove(self, text: str) -> str:
        if self.pattern is None:
            return text
        kept = self.pattern.sub(" ", text.replace("\u2019", "'"))
        kept = _SPACES.sub(" ", kept).strip()
        kept = re.sub(r"\s+([,.!?;:])", r"\1", kept)
        return re.sub(r"^[\s,.!?;:…-]+|[\s,;:-]+$", "", kept)

    def only_filler(self, text: str) -> bool:
        """Whether nothing but fillers and punctuation is left once the fillers are gone."""
        return not re.search(r"\w", self.remove(text))


def apply_rules(cues: list[Cue], rules: NarrationRules, stripper: FillerStripper) -> tuple[str | None, str, list[int]]:
    """(caption, "", indices of the cues in it) for the cues of one window (in time order), or
    (None, reason, []) with reason no_narration, only_filler, too_few_words or too_short."""
    cues = [c for c in cues if c.text]
    if not cues:
        return None, "no_narration", []
    spoken = [c for c in cues if not stripper.only_filler(c.text)]
    if not spoken:
        return None, "only_filler", []
    caption = " ".join(stripper.remove(c.text) if rules.strip_fillers else c.text for c in spoken)
    if len(caption.split()) < rules.min_words:
        return None, "too_few_words", []
    if len(caption) < rules.min_chars:
        return None, "too_short", []
    return caption, "", [c.index for c in spoken]
