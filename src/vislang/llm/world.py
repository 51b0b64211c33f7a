"""A rule-based backend for the built-in world: generated-text methods, end to end, with no model.

Why rules: every method that asks a language model for text (CuPL, GIST, LaBo) can then be run
and tested on a laptop against the world, whose classes (``SHAPES``, ``COLORS``) and geometry are
known exactly, and the answers are true of the images the world draws (see
:mod:`vislang.llm.world_facts`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

from vislang.data.world import COLORS, SHAPES
from vislang.llm.base import Backend, LLMError, Prompt, article, check_sampling, prompt_kind, prompt_text, short
from vislang.llm.world_facts import SHAPE_FACTS, ClassFacts, color_facts

RULES_VERSION = "1"  # part of the cache key: changed rules must not be served from an old cache
_SHAPE_WORDS = re.compile(r"\b(" + "|".join(SHAPES) + r")(?:e?s)?\b", re.IGNORECASE)
_COLOR_WORDS = re.compile(r"\b(" + "|".join(COLORS) + r")\b", re.IGNORECASE)
_SUMMARY_TEMPLATES = ("a photo of {a}: {gist}.", "{a}, {gist}.", "{a} on a dark background: {gist}.")


def world_classes(text: str) -> tuple[str | None, str | None]:
    """(shape, colour) a prompt is about: the first of the world's shape names and the first of
    its colour names that the prompt mentions as whole words (plurals included), or None."""
    shape, color = _SHAPE_WORDS.search(text), _COLOR_WORDS.search(text)
    return (shape.group(1).lower() if shape else None), (color.group(1).lower() if color else None)


def guess_kind(text: str) -> str:
    """The kind of a plain-string prompt, from its words (a :class:`Request` names it instead)."""
    lower = text.lower()
    if "summar" in lower:
        return "summary"
    if re.search(r"\blist\b", lower) and re.search(r"attribute|feature|concept|characteristic", lower):
        return "concepts"
    if re.search(r"fine-grained|fine grained|distinguish|differ|detailed|apart from", lower):
        return "fine_grained"
    return "describe"


class WorldBackend(Backend):
    """Answers about the world's shapes and colours, by prompt kind.

    The class is the first shape name and the first colour name the prompt mentions (so a prompt
    should name its class before any other; one naming a colour and a shape is about both, "a red
    triangle"); a prompt naming neither is refused with one line. The kind is the
    :class:`~vislang.llm.base.Request`'s; a plain string's is guessed from its words
    (:func:`guess_kind`): "summar..." is a summary, "list" with "attribute"/"feature"/"concept"
    a concept list, "fine-grained"/"distinguish"/"differ"/"detailed" a fine-grained description,
    anything else (CuPL's "What does a {} look like?", "A caption of an image of a {}:") a
    description. What each kind answers:

    - ``describe``: one sentence on what the class looks like (corners, sides, points, curvature;
      or the colour's shade, what shares it, how it is mixed), the ``n`` texts taken in turn
      from the class's sentences from a place fixed by the prompt;
    - ``fine_grained``: one sentence on how the class differs from the world classes most like it;
    - ``concepts``: short concepts, one a line ("three corners", "flat base"); text ``k`` lists
      them all, rotated by ``k``;
    - ``summary``: one caption ("a photo of a triangle: three straight sides, ...").

    The answers do not depend on the temperature: the same prompt always gets the same texts.
    """

    name = "world"

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "model": f"rules-{RULES_VERSION}"}

    def generate(self, prompts: Sequence[Prompt], n: int, temperature: float) -> list[list[str]]:
        check_sampling(n, temperature)
        return [self.answer(prompt, n) for prompt in prompts]

    def answer(self, prompt: Prompt, n: int) -> list[str]:
        """The ``n`` texts for one prompt."""
        text = prompt_text(prompt)
        kind = prompt_kind(prompt) or guess_kind(text)
        shape, color = world_classes(text)
        if shape is None and color is None:
            raise LLMError(
                f"world backend: prompt {short(text)} names no class of the built-in world "
                f"(shapes: {', '.join(SHAPES)}; colours: {', '.join(COLORS)})"
            )
        noun = f"{color} {shape}" if color and shape else shape or f"{color} object"
        facts = _facts(shape, color)
        start = _offset(text)
        if kind == "concepts":
            items = facts.concepts
            return ["\n".join(items[(k + i) % len(items)] for i in range(len(items))) for k in range(n)]
        if kind == "summary":
            pool = tuple(t.format(a=f"{article(noun)} {noun}", gist=facts.gist) for t in _SUMMARY_TEMPLATES)
        else:
            pool = facts.fine_grained if kind == "fine_grained" else facts.describe
            phrase = f"{article(noun)} {noun}"
            pool = tuple(s.format(A=phrase[0].upper() + phrase[1:], a=phrase) for s in pool)
        return [pool[(start + k) % len(pool)] for k in range(n)]


def _facts(shape: str | None, color: str | None) -> ClassFacts:
    """The facts of a shape, a colour, or both (the shape's and the colour's interleaved)."""
    if color is None:
        return SHAPE_FACTS[shape]
    if shape is None:
        return color_facts(color)
    a, b = SHAPE_FACTS[shape], color_facts(color)
    return ClassFacts(
        concepts=_interleave(a.concepts, b.concepts),
        describe=_interleave(a.describe, b.describe),
        fine_grained=_interleave(a.fine_grained, b.fine_grained),
        gist=f"{a.gist}, in {b.gist}",
    )


def _interleave(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    out = [x for pair in zip(a, b) for x in pair]
    longer = a if len(a) > len(b) else b
    return (*out, *longer[min(len(a), len(b)) :])


def _offset(text: str) -> int:
    """Where in its pool a prompt's answers start: fixed by the prompt, so different questions
    about one class start at different sentences."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
