"""Answers replayed from a file, so a run that used a model can be repeated offline.

The file is JSONL with one ``{"prompt": ..., "texts": [...]}`` a line; a generation cache
(:mod:`vislang.llm.cache`) has that shape too, so the cache a run left can be shipped beside its
results and replayed without the server. A prompt the file does not hold is an error naming it:
replaying must never quietly fall back to something else.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vislang.errors import DataError
from vislang.files import read_jsonl
from vislang.llm.base import Backend, LLMError, Prompt, check_sampling, prompt_text, short


class RecordedBackend(Backend):
    """Texts looked up by prompt in a recorded-responses file.

    Where a prompt was recorded several times (a cache holds one record per setting), the record
    with the same ``n`` and ``temperature`` is used, else the first with at least ``n`` texts; the
    first ``n`` of its texts are returned.
    """

    name = "recorded"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"recorded-responses file not found: {self.path}")
        self._records: dict[str, list[dict[str, Any]]] = {}
        for number, record in enumerate(read_jsonl(self.path), 1):
            prompt, texts = record.get("prompt"), record.get("texts")
            if not isinstance(prompt, str) or not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise DataError(f'{self.path}: record {number} must be {{"prompt": text, "texts": [texts]}}')
            self._records.setdefault(prompt, []).append(record)
        if not self._records:
            raise DataError(f"{self.path}: the recorded-responses file holds no records")

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "model": str(self.path)}

    def generate(self, prompts: Sequence[Prompt], n: int, temperature: float) -> list[list[str]]:
        check_sampling(n, temperature)
        return [self._texts(prompt_text(prompt), n, temperature) for prompt in prompts]

    def _texts(self, prompt: str, n: int, temperature: float) -> list[str]:
        records = self._records.get(prompt)
        if records is None:
            raise LLMError(f"{self.path}: prompt {short(prompt)} is not recorded")
        same = [r for r in records if r.get("n") == n and r.get("temperature") == temperature]
        enough = [r for r in same + records if len(r["texts"]) >= n]
        if not enough:
            most = max(len(r["texts"]) for r in records)
            raise LLMError(f"{self.path}: prompt {short(prompt)} has {most} recorded texts, {n} asked")
        return list(enough[0]["texts"][:n])
