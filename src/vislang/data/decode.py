"""Decoding one sample's image and caption, with every failure mapped to a named skip reason.

Loaders never stop on a bad sample: they catch :class:`BadSample`, count its ``reason`` and
move on. Reasons: ``missing_file``, ``unreadable_file``, ``bad_image`` (corrupt or truncated),
``too_large`` (more pixels than the configured limit: a decompression-bomb guard checked from
the header, before any pixel is decoded), ``missing_image``, ``missing_caption``,
``empty_caption`` (empty or whitespace), ``bad_text`` (not UTF-8).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image


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
