"""Decoding one sample's image and caption, with every failure mapped to a named skip reason.

Loaders never stop on a bad sample: they catch :class:`BadSample`, count its ``reason`` and
move on. Reasons: ``missing_file``, ``unreadable_file``, ``bad_image`` (corrupt or truncated),
``too_large`` (more pixels than the configured limit: a decompression-bomb guard checked from
the header, before any pixel is decoded), ``missing_image``, ``missing_caption``,
``empty_caption`` (empty or whitespace), ``bad_text`` (not UTF-8).

:class:`SampleDecoder` is the one place where a raw sample (image bytes or path, caption
candidates) becomes training input, shared by every source kind that reads files.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

ImageRef = bytes | str | Path  # encoded image bytes or a file path


class BadSample(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def open_image(source: bytes | str | Path, max_pixels: int) -> Image.Image:
    """The decoded RGB image of a file path or encoded bytes."""
    try:
        handle = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise BadSample("missing_file") from None
    except OSError:
        raise BadSample("unreadable_file") from None
    with handle, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
        try:
            image = Image.open(handle)
            if image.width * image.height > max_pixels:
                raise BadSample("too_large")
            image.load()
            return image.convert("RGB")
        except Image.DecompressionBombError:
            raise BadSample("too_large") from None
        except BadSample:
            raise
        except (OSError, ValueError, SyntaxError, Image.UnidentifiedImageError):
            raise BadSample("bad_image") from None


def open_images(
    items: Sequence[tuple[str, Path]], max_pixels: int, skipped: dict[str, list[str]]
) -> list[tuple[str, Image.Image]]:
    """(name, RGB image) of each (name, path) that reads as training reads images; the names of
    the others are added to ``skipped`` under their reason (corrupt, truncated, too many pixels)."""
    images = []
    for name, path in items:
        try:
            images.append((name, open_image(path, max_pixels)))
        except BadSample as bad:
            skipped.setdefault(bad.reason, []).append(name)
    return images


def decode_caption(value: bytes | str | None) -> str:
    """A caption as clean text; raises for missing, empty or non-UTF-8 captions."""
    if value is None:
        raise BadSample("empty_caption")
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise BadSample("bad_text") from None
    text = " ".join(value.split())
    if not text:
        raise BadSample("empty_caption")
    return text


def pick_caption(captions: Sequence, rng: np.random.Generator, pick: str) -> object:
    """One caption of several: a seeded random one per visit, or the first."""
    if not captions:
        raise BadSample("missing_caption")
    return captions[int(rng.integers(len(captions)))] if pick == "random" else captions[0]


@dataclass(frozen=True)
class SampleDecoder:
    """Turns a raw sample into ``(image uint8 [S, S, 3], caption)`` the same way for every source
    kind (tables, folders, random-access and streamed shards), so that they cannot drift apart.

    The caption is picked and decoded first, then the image is opened within ``max_pixels`` and
    transformed: that order fixes both the random draws (caption pick, then the crop) and which
    skip reason a sample with several faults gets. The image may be given as a function that
    reads it, so that a sample whose caption fails is not read at all.
    """

    clips: ClassVar[bool] = False  # True for vislang.data.video.ClipDecoder (samples of T frames)
    transform: Callable[[Image.Image, np.random.Generator | None], np.ndarray]
    max_pixels: int
    caption_pick: str = "random"

    def open(self, image: ImageRef) -> Image.Image:
        """The decoded RGB image (:class:`BadSample` for a missing, corrupt or too large one)."""
        return open_image(image, self.max_pixels)

    def decode(
        self, image: ImageRef | Callable[[], ImageRef], captions: Sequence, rng: np.random.Generator
    ) -> tuple[np.ndarray, str]:
        """``(image, caption)`` of one sample, or :class:`BadSample` with the first fault's reason."""
        caption = decode_caption(pick_caption(captions, rng, self.caption_pick))
        raw = image() if callable(image) else image
        return self.transform(self.open(raw), rng), caption
