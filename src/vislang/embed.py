"""``vislang embed``: embeddings of a folder of images or of a text file, in batches.

Embeddings of a folder of images or of a text file (one text per line) are written as ``.npy``
(float32 [N, D], with the ids in ``NAME.ids.txt`` beside it) or ``.parquet`` (columns ``id`` and
``embedding``), computed in batches with a progress bar.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from vislang.data.samples import IMAGE_SUFFIXES
from vislang.errors import DataError


def image_items(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    items = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not items:
        raise DataError(f"{folder}: no images")
    return items


def text_items(path: str | Path) -> list[str]:
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read texts from {path}: {error}") from None
    if not lines:
        raise DataError(f"{path}: no texts")
    return lines


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@torch.no_grad()
def embed_images(model, preprocess, folder: str | Path, batch_size: int, quiet: bool = False):
    """(ids, embeddings [N, D]) of every image under ``folder``; unreadable images are skipped and
    reported in the returned ``skipped`` list."""
    folder = Path(folder)
    ids, chunks, skipped = [], [], []
    device = next(model.parameters()).device
    items = image_items(folder)
    with tqdm(total=len(items), disable=quiet, unit="image") as bar:
        for batch in _batches(items, batch_size):
            images, names = [], []
            for path in batch:
                try:
                    with Image.open(path) as image:
                        images.append(image.convert("RGB"))
                    names.append(str(path.relative_to(folder)))
                except (OSError, UnidentifiedImageError):
                    skipped.append(str(path.relative_to(folder)))
            if images:
                chunks.append(model.encode_image(preprocess(images).to(device)).float().cpu())
                ids += names
            bar.update(len(batch))
    if not chunks:
        raise DataError(f"{folder}: none of the images could be read")
    return ids, torch.cat(chunks).numpy(), skipped


@torch.no_grad()
def embed_texts(model, tokenizer, path: str | Path, batch_size: int, quiet: bool = False):
    """(ids = line numbers from 0, embeddings [N, D]) of every line of ``path``."""
    texts = text_items(path)
    device = next(model.parameters()).device
    chunks = []
    with tqdm(total=len(texts), disable=quiet, unit="text") as bar:
        for batch in _batches(texts, batch_size):
            chunks.append(model.encode_text(tokenizer(batch).to(device)).float().cpu())
            bar.update(len(batch))
    return [str(i) for i in range(len(texts))], torch.cat(chunks).numpy(), []


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
