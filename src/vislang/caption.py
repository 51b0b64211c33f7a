"""Captions for image files from a captioning model (``cap``, ``cappa`` or ``coca``), in batches."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image

from vislang.errors import DataError
from vislang.generation import GenerationConfig, generate

if TYPE_CHECKING:
    from vislang.tokenizers import BPETokenizer


def read_images(paths: Sequence[str | Path]) -> list[Image.Image]:
    """The images at ``paths`` as RGB; a missing or unreadable file is a :class:`DataError` naming it."""
    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        except FileNotFoundError:
            raise DataError(f"image not found: {path}") from None
        except OSError as error:
            raise DataError(f"cannot read image {path}: {error}") from None
    return images


def caption_files(
    model: torch.nn.Module,
    tokenizer: BPETokenizer,
    preprocess: Callable[[list[Image.Image]], torch.Tensor],
    paths: Sequence[str | Path],
    settings: GenerationConfig,
    batch_size: int,
) -> list[tuple[str, str]]:
    """(path, caption) for every image file, in order, decoded ``batch_size`` images at a time.

    ``model`` is a captioner's or CoCa's model (it has ``image_context``); ``tokenizer`` gives the
    special token ids and decodes; ``preprocess`` turns a list of PIL images into a batch tensor.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    captions = []
    for start in range(0, len(paths), batch_size):
        batch = paths[start : start + batch_size]
        pixels = preprocess(read_images(batch))
        tokens = generate(model, pixels, tokenizer.sot_id, tokenizer.eot_id, tokenizer.pad_id, settings)
        captions += [(str(path), tokenizer.decode(row.tolist())) for path, row in zip(batch, tokens)]
    return captions
