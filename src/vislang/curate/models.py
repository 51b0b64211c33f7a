"""Models inside curation workers: each checkpoint is opened once per process, and images and
texts are encoded in batches, so a file's images are never all decoded at once."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vislang.api import load, load_objective, make_preprocess
from vislang.errors import ConfigError

_LOADED: dict[tuple[str, str], tuple] = {}
BATCH = 64


def contrastive(checkpoint: str) -> tuple:
    """(model, tokenizer, preprocess) of any checkpoint ``vislang.load`` opens, once per process."""
    if ("contrastive", checkpoint) not in _LOADED:
        model, tokenizer, preprocess = load(checkpoint)
        if not hasattr(model, "encode_text"):
            raise ConfigError(f"{checkpoint}: needs a contrastive model (clip, siglip, coca)")
        _LOADED[("contrastive", checkpoint)] = (model, tokenizer, preprocess)
    return _LOADED[("contrastive", checkpoint)]


def captioner(checkpoint: str) -> tuple:
    """(model, tokenizer, preprocess) of a cap, cappa or coca checkpoint, once per process."""
    if ("captioner", checkpoint) not in _LOADED:
        objective, tokenizer, cfg = load_objective(checkpoint)
        if objective.captioner() is None:
            raise ConfigError(
                f"{checkpoint}: a {cfg.objective.kind!r} model writes no captions (use cap, cappa or coca)"
            )
        _LOADED[("captioner", checkpoint)] = (objective.model, tokenizer, make_preprocess(cfg))
    return _LOADED[("captioner", checkpoint)]


class ImageEncoder:
    """Normalised image embeddings of decoded images added one at a time, encoded 64 at a time,
    so no more than a batch of decoded images is held."""

    def __init__(self, checkpoint: str) -> None:
        self.model, _, self.preprocess = contrastive(checkpoint)
        self.pending: list = []
        self.parts: list[np.ndarray] = []

    def add(self, image) -> None:
        self.pending.append(image)
        if len(self.pending) == BATCH:
            self._flush()

    def _flush(self) -> None:
        import torch

        if self.pending:
            with torch.no_grad():
                self.parts.append(self.model.encode_image(self.preprocess(self.pending)).float().numpy())
            self.pending = []

    def result(self) -> np.ndarray:
        """[N, D] for the N images added."""
        self._flush()
        return np.concatenate(self.parts) if self.parts else np.zeros((0, 1), np.float32)


def encode_texts(checkpoint: str, texts: Sequence[str]) -> np.ndarray:
    """Normalised text embeddings [N, D]."""
    import torch

    model, tokenizer, _ = contrastive(checkpoint)
    with torch.no_grad():
        parts = [model.encode_text(tokenizer(list(texts[i : i + BATCH]))).float().numpy()
                 for i in range(0, len(texts), BATCH)]  # fmt: skip
    return np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)
