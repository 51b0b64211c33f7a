"""Batched feature extraction for evaluators, through the objective's scoring interface."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vislang.data.transforms import to_tensor
from vislang.objectives.base import Objective


def device_of(objective: Objective) -> torch.device:
    return next(objective.parameters()).device


@torch.no_grad()
def image_features(
    objective: Objective, images: np.ndarray, mean: Sequence[float], std: Sequence[float], batch_size: int
) -> torch.Tensor:
    device = device_of(objective)
    chunks = [
        objective.image_features(to_tensor(images[i : i + batch_size], mean, std).to(device))
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks).float()


@torch.no_grad()
def text_features(objective: Objective, tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
    device = device_of(objective)
    chunks = [objective.text_features(tokens[i : i + batch_size].to(device)) for i in range(0, len(tokens), batch_size)]
    features = torch.cat(chunks)
    return features.float() if features.is_floating_point() else features
