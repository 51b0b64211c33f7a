"""A pretrained Hugging Face text encoder as the text tower (BERT family and others that
``transformers.AutoModel`` builds), read from a local directory only: no download ever.

BiomedCLIP-style: the encoder's token outputs are pooled (``cls``: the first token, ``mean``:
the mean over real tokens) and projected to the shared embedding by a linear map or a two-layer
MLP. Padding is what trails the text (:func:`real_tokens`), so the attention mask needs nothing
but the token ids.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn

from vislang.errors import ConfigError, first_line
from vislang.models.text.transformer import real_tokens


def load_pretrained_encoder(path: str | Path) -> nn.Module:
    try:
        from transformers import AutoModel
    except ImportError:
        raise ConfigError("model.text.pretrained needs the transformers package (pip install transformers)") from None
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ConfigError(f"model.text.pretrained: no Hugging Face model (config.json) in {path}")
    try:
        return AutoModel.from_pretrained(str(path), local_files_only=True, add_pooling_layer=False)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError, EOFError,
            pickle.UnpicklingError, SafetensorError) as error:  # fmt: skip
        # what transformers raises for a broken config.json, weights file or model directory
        raise ConfigError(
            f"model.text.pretrained: cannot read the Hugging Face model in {path}: {first_line(error)}"
        ) from None


class PretrainedTextTower(nn.Module):
    """A local Hugging Face encoder as the text tower. ``path`` is ``model.text.pretrained``;
    ``context_length``, ``pool`` and ``proj`` are the ``model.text`` fields of those names (mapped
    by :mod:`vislang.objectives.towers`). ``context_length`` is only checked against the
    encoder's positions (None: not checked)."""

    def __init__(
        self,
        path: str | Path,
        embed_dim: int,
        pad_id: int,
        *,
        context_length: int | None = None,
        pool: str = "cls",
        proj: str = "linear",
    ) -> None:
        super().__init__()
        self.pad_id, self.pooling = pad_id, pool
        self.encoder = load_pretrained_encoder(path)
        width = self.encoder.config.hidden_size
        limit = getattr(self.encoder.config, "max_position_embeddings", None)
        if limit is not None and context_length is not None and context_length > limit:
            raise ConfigError(f"model.text.context_length {context_length} exceeds the encoder's {limit} positions")
        if proj == "mlp":
            hidden = (width + embed_dim) // 2
            self.proj = nn.Sequential(
                nn.Linear(width, hidden, bias=False), nn.GELU(), nn.Linear(hidden, embed_dim, bias=False)
            )
        else:
            self.proj = nn.Linear(width, embed_dim, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        real = real_tokens(tokens, self.pad_id)
        x = self.encoder(input_ids=tokens, attention_mask=real.long()).last_hidden_state
        if self.pooling == "cls":
            pooled = x[:, 0]
        else:
            weights = real.unsqueeze(-1).to(x.dtype)
            pooled = (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
        return self.proj(pooled)
