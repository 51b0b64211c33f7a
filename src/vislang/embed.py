"""``vislang embed``: embeddings of a folder of images or of a text file, in batches.

Embeddings of a folder of images or of a text file (one text per line) are written as ``.npy``
(float32 [N, D], with the ids in ``NAME.ids.txt`` beside it) or ``.parquet`` (columns ``id`` and
``embedding``), computed in batches with a progress bar. Images are read as training reads them
(:func:`vislang.data.decode.open_image`): one that is corrupt, truncated or larger than the
decompression-bomb guard is skipped and counted by reason, and the others are still embedded.
Blank lines of a text file are skipped; the ids stay the line numbers of the kept lines.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from vislang.config.data import DataConfig
from vislang.data.decode import open_images
from vislang.data.samples import IMAGE_SUFFIXES
from vislang.errors import DataError, first_line
from vislang.files import skip_summary

MAX_PIXELS = DataConfig.model_fields["max_image_pixels"].default  # training's decompression-bomb guard


def image_items(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    items = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not items:
        raise DataError(f"{folder}: no images")
    return items


def text_items(path: str | Path) -> tuple[list[int], list[str], int]:
    """(line numbers from 0, texts) of the non-blank lines of a UTF-8 text file, and the number
    of blank lines left out."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"text file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read texts from {path}: {first_line(error)}") from None
    kept = [(i, line) for i, line in enumerate(lines) if line.strip()]
    if not kept:
        raise DataError(f"{path}: no texts (every line is blank)" if lines else f"{path}: no texts")
    return [i for i, _ in kept], [line for _, line in kept], len(lines) - len(kept)


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@torch.no_grad()
def embed_images(model, preprocess, folder: str | Path, batch_size: int, quiet: bool = False,
                 max_pixels: int = MAX_PIXELS):  # fmt: skip
    """(ids, embeddings [N, D], skipped) of every image under ``folder``. An image that cannot be
    used (corrupt, truncated, more than ``max_pixels`` pixels: read as training reads images) is
    left out; ``skipped`` maps each reason to the ids skipped for it."""
    folder = Path(folder)
    ids, chunks, skipped = [], [], {}
    device = next(model.parameters()).device
    items = image_items(folder)
    with tqdm(total=len(items), disable=quiet, unit="image") as bar:
        for batch in _batches(items, batch_size):
            read = open_images([(str(path.relative_to(folder)), path) for path in batch], max_pixels, skipped)
            if read:
                pixels = preprocess([image for _, image in read]).to(device)
                chunks.append(model.encode_image(pixels).float().cpu())
                ids += [name for name, _ in read]
            bar.update(len(batch))
    if not chunks:
        raise DataError(f"{folder}: none of the images could be read ({skip_summary(skipped, len(items))})")
    return ids, torch.cat(chunks).numpy(), skipped


@torch.no_grad()
def embed_texts(model, tokenizer, path: str | Path, batch_size: int, quiet: bool = False):
    """(ids, embeddings [N, D], blank) of the non-blank lines of ``path``: ids are their line
    numbers from 0, ``blank`` the number of blank lines left out."""
    numbers, texts, blank = text_items(path)
    device = next(model.parameters()).device
    chunks = []
    with tqdm(total=len(texts), disable=quiet, unit="text") as bar:
        for batch in _batches(texts, batch_size):
            chunks.append(model.encode_text(tokenizer(batch).to(device)).float().cpu())
            bar.update(len(batch))
    return [str(i) for i in numbers], torch.cat(chunks).numpy(), blank


def write_embeddings(ids: list[str], embeddings: np.ndarray, out: str | Path) -> list[Path]:
    """``.npy`` (+ ``.ids.txt``) or ``.parquet``; returns the files written."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        column = pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1)), embeddings.shape[1])
        pq.write_table(pa.table({"id": ids, "embedding": column}), out)
        return [out]
    if out.suffix != ".npy":
        raise DataError(f"{out}: write embeddings to a .npy or .parquet file")
    np.save(out, embeddings.astype(np.float32))
    id_file = out.with_suffix(".ids.txt")
    id_file.write_text("".join(i + "\n" for i in ids))
    return [out, id_file]
