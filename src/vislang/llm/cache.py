"""Every generation goes through a JSONL cache, so a rerun never asks a model twice.

Why a cache and not only a results file: generated text costs money or GPU time and is not
reproducible from a remote server, so the answers themselves are the record of a run. A record
is keyed by what produced it (backend, model, the backend's settings such as ``max_tokens``)
and what was asked (prompt, its kind, ``n``, ``temperature``); a rerun with the same key reads
the stored texts and sends nothing.

Each record is appended with one ``write`` on a file opened for appending and flushed to disk
before the next prompt is asked: a killed run loses at most the record being written. Its torn
last line is left out on reading (:func:`vislang.files.read_jsonl`) and cut off before the next
append, so it never ends up in the middle of the file. Records are only ever added; two runs
sharing a cache file append whole lines.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vislang.errors import DataError, first_line
from vislang.files import read_jsonl
from vislang.llm.base import Backend, LLMError, Prompt, check_sampling, prompt_kind, prompt_text, short


def check_texts(texts: Any, n: int, who: str, prompt: str) -> list[str]:
    """``texts`` if it is ``n`` strings: what a backend returns must be that before it is stored."""
    if not isinstance(texts, list) or len(texts) != n or not all(isinstance(t, str) for t in texts):
        got = f"{len(texts)} items" if isinstance(texts, list) else type(texts).__name__
        raise LLMError(f"{who}: expected {n} texts for prompt {short(prompt)}, got {got}")
    return texts


def cache_key(identity: dict[str, Any], prompt: Prompt, n: int, temperature: float) -> dict[str, Any]:
    """The fields a cache record is found by (everything in the record but its texts)."""
    return {**identity, "kind": prompt_kind(prompt), "prompt": prompt_text(prompt), "n": n,
            "temperature": float(temperature)}  # fmt: skip


def _key_string(key: dict[str, Any]) -> str:
    return json.dumps(key, sort_keys=True, ensure_ascii=False)


class GenerationCache:
    """The records of one cache file, looked up by key and appended one at a time."""

    def __init__(self, path: str | Path, writable: bool = True) -> None:
        self.path = Path(path)
        self.writable = writable
        if self.path.is_dir():
            raise DataError(f"cache {self.path} is a directory, not a JSONL file")
        self._texts: dict[str, list[str]] = {}
        self._checked_tail = False
        for number, record in enumerate(read_jsonl(self.path), 1):
            texts = record.pop("texts", None)
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise DataError(f"{self.path}: record {number} has no list of texts (not a generation cache?)")
            self._texts[_key_string(record)] = texts

    def __len__(self) -> int:
        return len(self._texts)

    def get(self, key: dict[str, Any]) -> list[str] | None:
        texts = self._texts.get(_key_string(key))
        return None if texts is None else list(texts)

    def put(self, key: dict[str, Any], texts: list[str]) -> None:
        """Append one record durably (one write, then fsync) and remember it (only remember it
        when the cache is not ``writable``)."""
        self._texts[_key_string(key)] = list(texts)
        if not self.writable:
            return
        line = (json.dumps({**key, "texts": texts}, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self._checked_tail:
                self._cut_torn_tail()
                self._checked_tail = True
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as error:
            raise DataError(f"cannot append to cache {self.path}: {first_line(error)}") from None

    def _cut_torn_tail(self) -> None:
        """Drop a last line without its newline (a writer killed mid-record) so the next record
        starts on a line of its own."""
        if not self.path.exists():
            return
        with open(self.path, "rb+") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return
            handle.seek(max(0, size - (1 << 20)))
            tail = handle.read()
            cut = tail.rfind(b"\n")
            handle.truncate(size - len(tail) + cut + 1 if cut >= 0 else max(0, size - len(tail)))


class CachedBackend(Backend):
    """A backend whose every answer is read from, or else written to, a :class:`GenerationCache`.

    Prompts are asked one at a time and each answer is stored before the next is asked, so an
    interrupted run resumes where it stopped. ``hits`` and ``misses`` count prompts this session.
    """

    def __init__(self, backend: Backend, cache: GenerationCache) -> None:
        self.backend = backend
        self.cache = cache
        self.name = backend.name
        self.hits = 0
        self.misses = 0

    def identity(self) -> dict[str, Any]:
        return self.backend.identity()

    def generate(self, prompts: Sequence[Prompt], n: int, temperature: float) -> list[list[str]]:
        check_sampling(n, temperature)
        identity = self.backend.identity()
        out = []
        for prompt in prompts:
            key = cache_key(identity, prompt, n, temperature)
            texts = self.cache.get(key)
            if texts is not None and len(texts) == n:
                self.hits += 1
            else:
                answer = self.backend.generate([prompt], n, temperature)
                if not isinstance(answer, list) or len(answer) != 1:
                    raise LLMError(f"{self.name} backend: expected one answer for one prompt")
                texts = check_texts(answer[0], n, f"{self.name} backend", prompt_text(prompt))
                self.cache.put(key, texts)
                self.misses += 1
            out.append(texts)
        return out

    def close(self) -> None:
        self.backend.close()
