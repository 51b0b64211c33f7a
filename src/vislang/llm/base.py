"""The one interface every language-model backend implements, and the request a method asks with.

A method asks for ``n`` texts per prompt at a temperature; which model answers (a server, a local
checkpoint, a file of recorded answers, the rules for the built-in world) is the backend's
business. A prompt is a plain string, or a :class:`Request` that also says what kind of answer
the method wants: a remote model needs only the words, but the rule-based world backend answers
by kind, and a method knows the kind for certain where guessing it from the words would not.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from vislang.errors import VislangError

# What a method wants back: a description of what a class looks like (CuPL), a fine-grained one
# that sets the class apart from similar ones (GIST), a list of short visual concepts, one a
# line (LaBo), or one caption summarising descriptions (GIST's summaries).
PromptKind = Literal["describe", "fine_grained", "concepts", "summary"]
PROMPT_KINDS: tuple[str, ...] = get_args(PromptKind)


class LLMError(VislangError):
    """A backend could not give the texts asked for (server refused, malformed answer, unknown prompt)."""


@dataclass(frozen=True)
class Request:
    """A prompt together with the kind of answer wanted (see :data:`PromptKind`)."""

    kind: PromptKind
    text: str

    def __post_init__(self) -> None:
        if self.kind not in PROMPT_KINDS:
            raise LLMError(f"unknown prompt kind {self.kind!r}; choose from {', '.join(PROMPT_KINDS)}")


Prompt = str | Request


def prompt_text(prompt: Prompt) -> str:
    """The words of a prompt, which is all a remote or local model sees."""
    return prompt.text if isinstance(prompt, Request) else prompt


def prompt_kind(prompt: Prompt) -> str | None:
    """The kind a method named, or None for a plain string."""
    return prompt.kind if isinstance(prompt, Request) else None


def article(noun: str) -> str:
    """``a`` or ``an`` before ``noun``, by its first letter (as CuPL chose it)."""
    return "an" if noun[:1].lower() in "aeiou" else "a"


def short(text: str, limit: int = 80) -> str:
    """``text`` on one line and cut to ``limit`` characters, for naming a prompt in an error."""
    line = " ".join(text.split())
    return repr(line if len(line) <= limit else line[: limit - 3] + "...")


def check_sampling(n: int, temperature: float) -> None:
    """Refuse settings no backend can honour, before anything is asked."""
    if not isinstance(n, int) or n < 1:
        raise LLMError(f"n (texts per prompt) must be a positive integer, got {n!r}")
    if not temperature >= 0 or temperature == float("inf"):
        raise LLMError(f"temperature must be a finite number >= 0, got {temperature!r}")


class Backend(ABC):
    """Prompts in, ``n`` texts per prompt out.

    ``identity()`` names what produced the texts (backend, model, and whatever else changes them,
    such as ``max_tokens`` or a seed); the cache keys its records on it, so texts from another
    model or setting are never served as if they were this one's.
    """

    name: str = "backend"

    @abstractmethod
    def generate(self, prompts: Sequence[Prompt], n: int, temperature: float) -> list[list[str]]:
        """``n`` texts for each prompt, in the prompts' order."""

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name}

    def close(self) -> None:  # noqa: B027 (an optional hook: most backends hold nothing to release)
        """Release connections or memory; the backend is not used afterwards."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
