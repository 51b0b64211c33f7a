"""Reading the small files a run and an export leave (JSON, JSONL) so that every way they can be
broken (missing, empty, truncated, not the format) is one line naming the file, never a
traceback. A JSONL file whose last line was torn by a killed writer is read without that line.
Also: the mode a newly created file gets (for writers that make theirs private) and the one-line
summary of skipped inputs by reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vislang.errors import DataError, first_line


def read_text(path: str | Path, what: str = "file", error: type[Exception] = DataError) -> str:
    """A UTF-8 text file's contents; missing or unreadable is one ``error`` naming the file."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as problem:
        raise error(f"cannot read {what} {path}: {first_line(problem)}") from None


def read_json(path: str | Path, what: str = "JSON file", error: type[Exception] = DataError) -> Any:
    """The parsed contents of a JSON file; any failure is one ``error`` naming the file."""
    return parse_json(read_text(path, what, error), path, what, error)


def parse_json(text: str, path: str | Path, what: str = "JSON file", error: type[Exception] = DataError) -> Any:
    """``text`` (read from ``path``) parsed as JSON; empty or invalid is one ``error`` naming the file."""
    if not text.strip():
        raise error(f"{path}: the {what} is empty (0 bytes of JSON)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as problem:
        raise error(
            f"{path}: not valid JSON ({problem.msg} at line {problem.lineno}, column {problem.colno})"
        ) from None


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a JSONL file (none if it does not exist). A torn last line (a writer killed
    mid-line) is left out; a broken line before the last is an error naming its number."""
    path = Path(path)
    if not path.exists():
        return []
    lines = [(i, line) for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
             if line.strip()]  # fmt: skip
    records = []
    for k, (number, line) in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if k == len(lines) - 1:
                break
            raise DataError(f"{path}: line {number} is not a JSON record") from None
        if isinstance(record, dict):
            records.append(record)
    return records


def process_umask() -> int:
    """The process's umask, read without changing it where Linux reports it (``/proc``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def give_normal_mode(path: str | Path) -> None:
    """Give ``path`` the mode a newly created file gets (``0o666 & ~umask``): writers that make
    their files private (safetensors writes 0600) would otherwise leave one file of a directory
    unreadable to the people who can read the rest."""
    os.chmod(path, 0o666 & ~process_umask())


SKIP_REASONS = {
    "bad_image": "corrupt, truncated or not an image",
    "too_large": "more pixels than data.max_image_pixels: a decompression-bomb guard",
    "missing_file": "not found",
    "unreadable_file": "cannot be opened",
}


def skip_summary(skipped: dict[str, list[str]], total: int, what: str = "image") -> str:
    """One line: how many of ``total`` items were skipped, by reason, with an example of each
    (``skipped`` maps a reason to the items skipped for it)."""
    count = sum(len(items) for items in skipped.values())
    reasons = "; ".join(
        f"{len(items)} {reason} ({SKIP_REASONS.get(reason, reason)}, e.g. {items[0]})"
        for reason, items in sorted(skipped.items())
        if items
    )
    return f"skipped {count} unreadable {what}{'' if count == 1 else 's'} of {total}: {reasons}"
