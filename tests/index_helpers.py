"""Building a small embedding index in tests without `vislang index`: the model's own
embeddings written in the index layout, so search and serve are tested on known rows."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import vislang
from vislang.search import ann, layout

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
SHAPES = ("circle", "square")


def drawn(colour: str, shape: str, offset: int) -> Image.Image:
    """A 48-px drawing of one coloured shape, shifted by ``offset`` pixels."""
    image = Image.new("RGB", (48, 48), (240, 240, 240))
    box = (6 + offset, 6 + offset, 34 + offset, 34 + offset)
    draw = ImageDraw.Draw(image)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLOURS[colour])
    return image


def shapes_collection() -> tuple[list[Image.Image], list[str | None]]:
    """Eighteen drawings (every colour and shape at three offsets) and their captions; every
    fourth row has none, as a collection with some uncaptioned images."""
    images, captions = [], []
    for i, (colour, shape) in enumerate((c, s) for c in COLOURS for s in SHAPES for _ in range(3)):
        images.append(drawn(colour, shape, i % 3 * 4))
        captions.append(f"a {colour} {shape}" if i % 4 else None)
    return images, captions


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


@torch.inference_mode()
def build_test_index(root: Path, model_path: Path, images: list[Image.Image], captions: list[str | None],
                     part_size: int = 8) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Index ``images`` (ids 0..N-1, keys img-<i>.png) with ``captions``; returns the image and
    text embeddings [N, D] (text rows of captionless images are zeros)."""
    model, tokenizer, preprocess = vislang.load(model_path)
    image_emb = model.encode_image(preprocess(images)).float().numpy()
    texts = [c if c is not None else "" for c in captions]
    text_emb = model.encode_text(tokenizer(texts)).float().numpy()
    text_emb[[c is None for c in captions]] = 0
    for part in range(0, (len(images) + part_size - 1) // part_size):
        rows = range(part * part_size, min(len(images), (part + 1) * part_size))
        layout.write_part(root, part, list(rows), [f"img-{i}.png" for i in rows], [captions[i] for i in rows],
                          image_emb[list(rows)], text_emb[list(rows)], [jpeg(images[i]) for i in rows], {})  # fmt: skip
    manifest = {
        "model": str(model_path),
        "part_size": part_size,
        "count": len(images),
        "sources": [{"kind": "test", "path": "images"}],
    }
    layout.write_manifest(root, manifest | {"faiss": ann.build_indexes(root)})
    return image_emb, text_emb
