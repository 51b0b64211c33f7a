"""Searching an embedding index: text -> image, image -> image, image -> text, and zero-shot
labels for one image, with the model the index was built with.

One :class:`SearchIndex` serves the command line (``vislang search``) and the web application
(``vislang serve``). Everything a result shows (key, caption, thumbnail) is looked up by the
row's id in the index's own parts, so nothing a caller passes is ever opened as a path.
"""

from __future__ import annotations

import io
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image, UnidentifiedImageError

from vislang.api import load
from vislang.errors import DataError
from vislang.search.ann import open_index
from vislang.search.layout import part_path, read_manifest, read_parts

DEFAULT_TEMPLATES = ("a photo of a {}.",)
# what a query or an upload may be: raster formats PIL decodes itself (EPS would start Ghostscript)
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
PARTS_CACHED = 4  # thumbnail parts kept in memory (a part is read whole)


@dataclass(frozen=True)
class Hit:
    """One result: the row's id, its similarity (cosine) and what the index stores about it."""

    id: int
    score: float
    key: str
    caption: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": round(self.score, 6), "key": self.key, "caption": self.caption}


class SearchIndex:
    """An opened index (``vislang index``'s directory). ``model`` is ``(model, tokenizer,
    preprocess)`` as :func:`vislang.load` returns; by default the manifest's model is loaded
    (``model_path`` overrides where it is, e.g. after the index was moved)."""

    def __init__(self, root: str | Path, model: tuple | None = None, model_path: str | None = None) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        faiss_info = self.manifest.get("faiss") or {}
        if "image" not in faiss_info:
            raise DataError(f"{self.root}: the index has no faiss index yet (rerun vislang index to finish it)")
        self.indexes = {kind: open_index(self.root, info) for kind, info in faiss_info.items()}
        self.part_size = int(self.manifest["part_size"])
        ids, keys, captions = [], [], []
        for table in read_parts(self.root, ["id", "key", "caption"]):
            ids.append(table.column("id").to_numpy())
            keys += table.column("key").to_pylist()
            captions += table.column("caption").to_pylist()
        self.ids = np.concatenate(ids) if ids else np.empty(0, np.int64)
        order = np.argsort(self.ids, kind="stable")
        self.ids, self.keys = self.ids[order], [keys[i] for i in order]
        self.captions = [captions[i] for i in order]
        self._model = model
        self._model_path = model_path or self.manifest["model"]
        self._thumbnails: OrderedDict[int, dict[int, bytes | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_captions(self) -> bool:
        return "text" in self.indexes

    @property
    def model(self) -> tuple:
        if self._model is None:
            self._model = load(self._model_path)
        return self._model

    def row(self, id_: int) -> int | None:
        """The sorted position of ``id_``, or None when the index holds no such row."""
        at = int(np.searchsorted(self.ids, id_))
        return at if at < len(self.ids) and self.ids[at] == id_ else None

    def _hits(self, scores: np.ndarray, found: np.ndarray) -> list[Hit]:
        hits = []
        for score, id_ in zip(scores.tolist(), found.tolist()):
            at = self.row(id_) if id_ >= 0 else None
            if at is not None:
                hits.append(Hit(int(id_), float(score), self.keys[at], self.captions[at]))
        return hits

    def _search(self, kind: str, query: np.ndarray, k: int) -> list[Hit]:
        if kind not in self.indexes:
            raise DataError(f"{self.root}: no captions were indexed, so there is no text to search")
        scores, found = self.indexes[kind].search(np.ascontiguousarray(query[None], dtype=np.float32), k)
        return self._hits(scores[0], found[0])

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> np.ndarray:
        model, tokenizer, _ = self.model
        return model.encode_text(tokenizer(texts)).float().numpy()

    @torch.inference_mode()
    def embed_image(self, image: Image.Image) -> np.ndarray:
        model, _, preprocess = self.model
        return model.encode_image(preprocess([image.convert("RGB")])).float().numpy()[0]

    def text_to_images(self, text: str, k: int = 10) -> list[Hit]:
        return self._search("image", self.embed_texts([text])[0], k)

    def image_to_images(self, image: Image.Image, k: int = 10) -> list[Hit]:
        return self._search("image", self.embed_image(image), k)

    def image_to_texts(self, image: Image.Image, k: int = 10) -> list[Hit]:
        return self._search("text", self.embed_image(image), k)

    def labels(self, image: Image.Image, classnames: list[str], templates=DEFAULT_TEMPLATES) -> list[tuple[str, float]]:
        """Zero-shot probabilities of ``classnames`` for ``image`` (prompts averaged per class,
        the model's logit scale), best first."""
        names = [c.strip() for c in classnames if c.strip()]
        if not names:
            raise DataError("zero-shot labels need at least one class name")
        prompts = self.embed_texts([t.format(c) for c in names for t in templates])
        weights = prompts.reshape(len(names), len(templates), -1).mean(axis=1)
        weights /= np.linalg.norm(weights, axis=1, keepdims=True)
        logits = torch.from_numpy(weights @ self.embed_image(image)) * _logit_scale(self.model[0])
        probs = torch.softmax(logits, dim=0).tolist()
        return sorted(zip(names, probs), key=lambda pair: -pair[1])

    def thumbnail(self, id_: int) -> bytes | None:
        """The stored JPEG of row ``id_`` (None: no such row, or indexed without thumbnails)."""
        if self.row(id_) is None:
            return None
        part = id_ // self.part_size
        cached = self._thumbnails.get(part)
        if cached is None:
            table = pq.read_table(part_path(self.root, part), columns=["id", "thumbnail"])
            cached = dict(zip(table.column("id").to_pylist(), table.column("thumbnail").to_pylist()))
            self._thumbnails[part] = cached
            while len(self._thumbnails) > PARTS_CACHED:
                self._thumbnails.popitem(last=False)
        self._thumbnails.move_to_end(part)
        return cached.get(id_)


def _logit_scale(model: Any) -> float:
    """The model's learned temperature where it has one, else CLIP's usual 100."""
    scale = getattr(model, "scale", None)
    return float(scale().detach()) if callable(scale) else 100.0


def open_query_image(path: str | Path, max_pixels: int) -> Image.Image:
    """An image file given as a query (a missing, bad or huge file is one line naming it)."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise DataError(f"cannot read query image {path}: {error.strerror or error}") from None
    try:
        return image_from_bytes(data, max_pixels)
    except DataError as error:
        raise DataError(f"{path}: {error}") from None


def image_from_bytes(data: bytes, max_pixels: int) -> Image.Image:
    """An uploaded image: its size checked from the header before decoding, then decoded fully
    and made RGB. Anything else (not an image, truncated, too many pixels, a decompression
    bomb) is a DataError with one line."""
    try:
        with warnings.catch_warnings():  # PIL warns of a bomb past its own limit; ours is checked below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        with opened as image:
            if image.width * image.height > max_pixels:
                raise DataError(f"the image is {image.width}x{image.height}, over the {max_pixels}-pixel limit")
            image.load()
            return image.convert("RGB")
    except UnidentifiedImageError:
        raise DataError(f"not an image of a supported format ({', '.join(IMAGE_FORMATS)})") from None
    except (OSError, Image.DecompressionBombError, ValueError, SyntaxError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"not a readable image ({reason})") from None
