"""Batched feature extraction for evaluators, through the objective's scoring interface.

Under torchrun every rank encodes its contiguous share of the rows and the shares are gathered
in rank order, so every rank holds all features (and computes the same metrics) after encoding
about 1/world of them: evaluation keeps every rank busy instead of parking ranks at a barrier.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist

from vislang.data.transforms import to_tensor
from vislang.objectives.base import Objective


def device_of(objective: Objective) -> torch.device:
    return next(objective.parameters()).device


def sharded(n: int, encode: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
    """``encode(start, stop)`` of rows ``0..n``: this rank's share, gathered from all ranks in order
    (one process, or fewer rows than ranks: all rows here)."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    if world == 1 or n < world:
        return encode(0, n)
    bounds = [n * r // world for r in range(world + 1)]
    rank = dist.get_rank()
    mine = encode(bounds[rank], bounds[rank + 1])
    longest = max(b - a for a, b in zip(bounds[:-1], bounds[1:]))
    padded = torch.cat([mine, mine.new_zeros(longest - len(mine), *mine.shape[1:])])
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded.contiguous())
    return torch.cat([g[: b - a] for g, a, b in zip(gathered, bounds[:-1], bounds[1:])])


@torch.no_grad()
def image_features(
    objective: Objective, images: np.ndarray, mean: Sequence[float], std: Sequence[float], batch_size: int
) -> torch.Tensor:
    device = device_of(objective)

    def encode(start: int, stop: int) -> torch.Tensor:
        chunks = [
            objective.image_features(to_tensor(images[i : min(i + batch_size, stop)], mean, std).to(device))
            for i in range(start, stop, batch_size)
        ]
        return torch.cat(chunks).float()

    return sharded(len(images), encode)


@torch.no_grad()
def text_features(objective: Objective, tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
    device = device_of(objective)

    def encode(start: int, stop: int) -> torch.Tensor:
        chunks = [
            objective.text_features(tokens[i : min(i + batch_size, stop)].to(device))
            for i in range(start, stop, batch_size)
        ]
        features = torch.cat(chunks)
        return features.float() if features.is_floating_point() else features

    return sharded(len(tokens), encode)
