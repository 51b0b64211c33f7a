"""LaBo's concept selection (Yang et al. 2023, "Language in a Bottle", CVPR, Sec. 3.2) as pure functions.

A language model proposes many candidate concepts per class, most of them redundant or not
visible. LaBo keeps ``k`` per class by greedily maximising a submodular score with two parts:

- discriminability: a concept should be more similar to the images of its own class than to
  the images of the other classes. With ``Sim(y, c)`` the mean cosine similarity of concept
  ``c``'s text embedding to the image embeddings of class ``y``, ``D(c)`` is the share of the
  concept's own class ``y_c`` in a softmax over the classes,
  ``D(c) = exp(Sim(y_c, c)/τ) / Σ_y' exp(Sim(y', c)/τ)``;
- coverage: the chosen concepts should together represent every candidate of the class (a
  facility location over concept-to-concept text similarities ``φ(c₁, c₂)``, clipped at 0),
  which rewards diversity, since a second near-copy of a chosen concept covers nothing new.

For the candidates ``S_y`` of class ``y`` and a chosen set ``C ⊆ S_y``:

    F(C) = α · Σ_{c ∈ C} D(c) + β · Σ_{c₁ ∈ S_y} max_{c₂ ∈ C} φ(c₁, c₂)        (F(∅) = 0)

Both parts are monotone and submodular (``D > 0``, ``φ ≥ 0``), so the greedy choice, adding the
candidate of largest marginal gain ``k`` times, is within ``1 - 1/e`` of the best ``k``-set
(Nemhauser, Wolsey and Fisher 1978).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vislang.errors import DataError


def class_similarity(
    images: torch.Tensor, labels: torch.Tensor, concepts: torch.Tensor, n_classes: int
) -> torch.Tensor:
    """``Sim[c, y]``: the mean cosine similarity of each concept to the images of each class.

    ``images`` [N, D] and ``concepts`` [M, D] are normalised embeddings; every class needs at
    least one image, since a class never seen would make the score undefined."""
    counts = torch.bincount(labels, minlength=n_classes).float()
    if (counts == 0).any():
        missing = int(torch.nonzero(counts == 0)[0])
        raise DataError(f"concept selection: class {missing} has no image to score concepts against")
    onehot = torch.nn.functional.one_hot(labels, n_classes).float()  # [N, C]
    return (concepts @ images.T) @ onehot / counts  # [M, C]


def discriminability(sim: torch.Tensor, owner: torch.Tensor, tau: float = 0.01) -> torch.Tensor:
    """``D(c)``: the softmax share (temperature ``tau``) of each concept's own class ``owner[c]``
    among its class similarities ``sim`` [M, C]; near 1 when only its class's images match it."""
    return torch.softmax(sim / tau, dim=1).gather(1, owner[:, None])[:, 0]


def labo_score(chosen: Sequence[int], disc: torch.Tensor, phi: torch.Tensor, alpha: float, beta: float) -> float:
    """``F(C)`` of the module docstring for one class's candidates: ``disc`` [M] and ``phi`` [M, M]."""
    if not chosen:
        return 0.0
    index = torch.as_tensor(list(chosen), dtype=torch.long)
    coverage = phi.clamp(min=0)[:, index].max(dim=1).values.sum()
    return float(alpha * disc[index].sum() + beta * coverage)


def greedy_select(disc: torch.Tensor, phi: torch.Tensor, k: int, alpha: float = 1.0, beta: float = 1.0) -> list[int]:
    """The ``k`` candidates chosen greedily for ``F`` (all of them when there are at most ``k``),
    in the order chosen; ties go to the earlier candidate, so the choice is reproducible."""
    m = len(disc)
    if k >= m:
        return list(range(m))
    phi = phi.clamp(min=0)
    covered = torch.zeros(m, dtype=phi.dtype)
    chosen: list[int] = []
    for _ in range(k):
        gains = alpha * disc + beta * (torch.maximum(phi, covered[:, None]) - covered[:, None]).sum(dim=0)
        if chosen:
            gains[torch.as_tensor(chosen)] = -torch.inf
        best = int(torch.argmax(gains))
        chosen.append(best)
        covered = torch.maximum(covered, phi[:, best])
    return chosen


def select_concepts(
    concepts: dict[str, list[str]],
    classnames: Sequence[str],
    text: torch.Tensor,
    images: torch.Tensor,
    labels: torch.Tensor,
    k: int,
    alpha: float = 1.0,
    beta: float = 1.0,
    tau: float = 0.01,
) -> dict[str, list[str]]:
    """``k`` concepts per class by :func:`greedy_select`: ``text`` [M, D] holds the normalised
    embeddings of every class's candidates, flattened in ``classnames`` order; ``images`` and
    ``labels`` are the labelled images the discriminability is measured on."""
    owner = torch.cat([torch.full((len(concepts[name]),), y, dtype=torch.long) for y, name in enumerate(classnames)])
    if len(owner) != len(text):
        raise DataError(f"concept selection: {len(text)} concept embeddings for {len(owner)} concepts")
    disc = discriminability(class_similarity(images, labels, text, len(classnames)), owner, tau)
    out, start = {}, 0
    for name in classnames:
        stop = start + len(concepts[name])
        block = text[start:stop]
        chosen = greedy_select(disc[start:stop], block @ block.T, k, alpha, beta)
        out[name] = [concepts[name][i] for i in chosen]
        start = stop
    return out
