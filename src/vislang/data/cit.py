"""CiT: curation in training (Xu et al. 2023, "CiT: Curation in Training for Effective
Vision-Language Data").

The loader draws ``batch_size / keep`` samples per step; before the step, the model being trained
embeds their captions and the target task's class names (each name in every template, the
normalised template embeddings averaged, as zero-shot classification builds its classifier), and
the ``batch_size`` samples whose caption is most similar to some class name form the batch. So
the data follow the task as the model learns, without a separate curation pass. The selection
is a pure function of the weights and the drawn batch, so a resumed run selects the same samples.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from vislang.config import CitConfig
from vislang.errors import ConfigError


def class_names(cfg: CitConfig) -> list[str]:
    names = list(cfg.class_names)
    if cfg.classes_file:
        try:
            names += [n.strip() for n in Path(cfg.classes_file).read_text(encoding="utf-8").splitlines() if n.strip()]
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"data.cit.classes_file: cannot read {cfg.classes_file}: {error}") from None
    return names


class CitCurator:
    def __init__(self, cfg: CitConfig, tokenizer: Callable, batch_size: int) -> None:
        names = class_names(cfg)
        self.prompts = tokenizer([t.format(n) for n in names for t in cfg.templates])  # [C * T, L]
        self.n_classes, self.n_templates = len(names), len(cfg.templates)
        self.batch_size = batch_size

    @torch.no_grad()
    def scores(self, model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        """Each caption's highest cosine similarity to a class embedding: [B]."""
        prompts = F.normalize(model.encode_text(self.prompts.to(tokens.device)).float(), dim=-1)
        classes = F.normalize(prompts.view(self.n_classes, self.n_templates, -1).mean(1), dim=-1)
        captions = F.normalize(model.encode_text(tokens).float(), dim=-1)
        return (captions @ classes.T).max(dim=1).values

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The ``batch_size`` samples of ``batch`` closest to the task (in their drawn order)."""
        drawn = len(batch["text"])
        if drawn <= self.batch_size:
            return batch
        # stable: among equal scores the earlier drawn sample wins, on every device
        best = torch.sort(self.scores(model, batch["text"]), descending=True, stable=True).indices
        keep = best[: self.batch_size].sort().values
        return {k: v[keep] if torch.is_tensor(v) and len(v) == drawn else v for k, v in batch.items()}
