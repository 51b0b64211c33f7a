"""Captions for image files from a captioning model (``cap``, ``cappa`` or ``coca``), in batches.

Images are read as training reads them (:func:`vislang.data.decode.open_image`): one that is
corrupt, truncated or larger than the decompression-bomb guard is skipped and counted by reason,
and the others are still captioned. A path that does not exist is an error before any work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image

from vislang.data.decode import open_images
from vislang.errors import DataError
from vislang.files import skip_summary
from vislang.generation import GenerationConfig, generate

if TYPE_CHECKING:
    from vislang.tokenizers import BPETokenizer


def check_images(paths: Sequence[str | Path]) -> None:
    """Stop before any work when an image path given does not exist (a typo, not a bad file)."""
    for path in paths:
        if not Path(path).is_file():
            raise DataError(f"image not found: {path}")


def caption_files(
    model: torch.nn.Module,
    tokenizer: BPETokenizer,
    preprocess: Callable[[list[Image.Image]], torch.Tensor],
    paths: Sequence[str | Path],
    settings: GenerationConfig,
    batch_size: int,
    max_pixels: int,
) -> tuple[list[tuple[str, str]], dict[str, list[str]]]:
    """(path, caption) for every image file that reads, in order, decoded ``batch_size`` images at
    a time, and the images skipped by reason (a :class:`DataError` when none reads).

    ``model`` is a captioner's or CoCa's model (it has ``image_context``); ``tokenizer`` gives the
    special token ids and decodes; ``preprocess`` turns a list of PIL images into a batch tensor.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    captions: list[tuple[str, str]] = []
    skipped: dict[str, list[str]] = {}
    for start in range(0, len(paths), batch_size):
        batch = open_images([(str(p), Path(p)) for p in paths[start : start + batch_size]], max_pixels, skipped)
        if not batch:
            continue
        pixels = preprocess([image for _, image in batch])
        tokens = generate(model, pixels, tokenizer.sot_id, tokenizer.eot_id, tokenizer.pad_id, settings)
        captions += [(str(path), tokenizer.decode(row.tolist())) for (path, _), row in zip(batch, tokens)]
    if not captions:
        raise DataError(f"none of the images could be read ({skip_summary(skipped, len(paths))})")
    return captions, skipped
