"""Few-shot logistic-regression probes: image-only, and cross-modal (text embeddings as shots).

The cross-modal probe is Lin et al., CVPR 2023, "Multimodality helps unimodality: Cross-modal
few-shot learning with multimodal models": in CLIP's shared embedding space a class name's text
embedding is one more training sample of its class, so a k-shot probe trains on k images plus
the class's texts. Here every prompt (each template filled with the class name) is one sample,
its embedding L2-normalised like the images'.

Both probes are :func:`vislang.eval.probes.fit_logistic` (CLIP's L-BFGS logistic regression)
on normalised features, with CLIP's parametric l2 search (97 log-spaced values, coarse to fine)
scored on a labelled validation split held out of the train split. Unlike
:func:`vislang.eval.probes.linear_probe`, the chosen model is *not* refitted on train +
validation: the validation images are many more than the shots, and refitting on them would
make a 1-shot probe a many-shot one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vislang.adapt.fewshot_math import accuracy
from vislang.errors import DataError
from vislang.eval.probes import CLIP_GRID, CLIP_SPANS, CLIP_START, fit_logistic


@dataclass(frozen=True)
class Probe:
    """A fitted probe: ``logits = x Wᵀ + b``; ``l2`` the chosen strength; ``curve`` (l2, val acc) tried."""

    weight: torch.Tensor
    bias: torch.Tensor
    l2: float
    curve: tuple[tuple[float, float], ...]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Float64 logits of features ``x`` (the probe was fitted in float64)."""
        return x.double().to(self.weight.device) @ self.weight.T + self.bias


def search_probe(
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    n_classes: int,
    max_iter: int = 1000,
    grid: tuple[float, ...] | None = None,
) -> Probe:
    """Fit on ``train`` at every l2 CLIP's search visits (start every 16 grid steps, then the
    peak's neighbours at 8, 4, 2, 1 steps; or every value of ``grid``), keep the fit with the best
    ``val`` accuracy (ties to the larger l2, the more regularised model, as linear_probe)."""
    if val[0].shape[0] == 0:
        raise DataError("search_probe: the validation split is empty")
    values = list(CLIP_GRID) if grid is None else sorted(float(v) for v in grid)
    fits: dict[int, tuple[torch.Tensor, torch.Tensor, float]] = {}

    def score(indices) -> int:
        for i in indices:
            if i not in fits:
                weight, bias = fit_logistic(train[0], train[1], n_classes, values[i], max_iter)
                logits = val[0].double().to(weight.device) @ weight.T + bias
                fits[i] = (weight, bias, accuracy(logits, val[1]))
        return max(indices, key=lambda i: (fits[i][2], i))

    if grid is None:
        peak = score(CLIP_START)
        for span in CLIP_SPANS:
            peak = score(sorted({max(peak - span, 0), peak, min(peak + span, len(values) - 1)}))
    else:
        peak = score(range(len(values)))
    curve = tuple((values[i], fits[i][2]) for i in sorted(fits))
    return Probe(fits[peak][0], fits[peak][1], values[peak], curve)


def cross_modal_set(
    x: torch.Tensor, y: torch.Tensor, prompt_features: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The shots plus every class's normalised prompt embeddings labelled with their class."""
    if not prompt_features:
        raise DataError("cross_modal_set: no classes")
    texts = torch.cat([torch.nn.functional.normalize(p.float(), dim=-1) for p in prompt_features]).to(x)
    labels = torch.cat([torch.full((len(p),), c, dtype=torch.long) for c, p in enumerate(prompt_features)])
    return torch.cat([x, texts]), torch.cat([y.long(), labels.to(y.device)])
