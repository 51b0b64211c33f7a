"""LaBo's concept selection (Yang et al. 2023, "Language in a Bottle", CVPR, Sec. 3.2) as pure functions.

A language model proposes many candidate concepts per class, most of them redundant or not
visible. LaBo keeps ``k`` per class by greedily maximising a submodular score with two parts.
The formulas below follow LaBo's released code (github.com/YueYANG1996/LaBo,
``models/select_concept/select_algo.py``: ``mi_score`` and ``submodular_select``), not a
reading of the paper's text:

- discriminability, a per-concept mutual-information term. ``Sim(c, y)`` is the mean
  similarity of concept ``c``'s text embedding to the training images of class ``y``. Each
  class's column is normalised over *all* candidates (every class's) into a joint
  distribution with uniform class marginal ``p(y) = 1/N`` (``N`` classes):
  ``p(c, y) = Sim(c, y) / (N Σ_c' Sim(c', y))``, ``p(c) = Σ_y p(c, y)``, and
  ``D(c) = Σ_y p(c, y) log(p(c, y) / (p(c) p(y)))``,
  concept ``c``'s share of the mutual information between concepts and classes, that is
  ``p(c) · KL(p(y | c) ‖ p(y))``. It is large for a concept that matches one class's images
  far better than the others' (whichever class proposed it; the column normalisation measures
  "better" against what all candidates score on each class) and 0 for one whose similarities
  follow the classes' totals. It is never negative, so its sum over the chosen set is monotone
  and modular.
- coverage: a facility location over the class's candidates ``S_y`` with the similarity
  apricot's ``FacilityLocationSelection(metric='cosine')`` uses, the *squared* cosine of the
  concepts' text embeddings, ``φ(c₁, c₂) = cos(c₁, c₂)²`` (apricot starts every candidate's
  coverage at 0, hence the ``max(·, 0)``, a no-op for a square). A second near-copy of a
  chosen concept covers nothing new, so coverage rewards diversity.

For the candidates ``S_y`` of class ``y`` and a chosen set ``C ⊆ S_y``:

    F(C) = α · Σ_{c ∈ C} D(c) + β · Σ_{c₁ ∈ S_y} max(0, max_{c₂ ∈ C} φ(c₁, c₂))        (F(∅) = 0)

The reference mixes the two with apricot's naive greedy (weights ``[1, β]`` on the score
scaled by ``α``): its configs use ``α = 1e7`` throughout (``D`` is of order ``1/M`` for ``M``
candidates) and ``β`` from 0 to 100 by data set, 1 for CUB; vislang's defaults are CUB's.
Both parts are monotone and submodular, so the greedy choice, adding the candidate of
largest marginal gain ``k`` times, is within ``1 - 1/e`` of the best ``k``-set (Nemhauser,
Wolsey and Fisher 1978).

Deliberate differences from the reference: ``Sim`` is a mean *cosine* (vislang's embeddings
are normalised; LaBo's default takes raw CLIP dot products), and similarities at or below 0,
where the logarithm is undefined (LaBo's would give NaN), are raised to ``MIN_SIM``; ``φ`` is
the squared cosine of the text embeddings alone, whereas LaBo hands apricot the embeddings
with the scaled score ``α D(c)`` prepended as an extra feature (an artefact of giving both
mixture parts one feature matrix, which makes ``φ`` depend on ``α``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vislang.errors import DataError

MIN_SIM = 1e-8  # floor for Sim(c, y) so that log p(c, y) stays finite for non-positive cosines


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


def mutual_information(sim: torch.Tensor) -> torch.Tensor:
    """``D(c)`` of the module docstring for every candidate from ``sim`` [M, C] (all classes'
    candidates together, since each class's column is normalised over all of them)."""
    sim = sim.double().clamp(min=MIN_SIM)
    n_classes = sim.shape[1]
    joint = sim / (sim.sum(dim=0) * n_classes)  # p(c, y); each column sums to p(y) = 1/N
    marginal = joint.sum(dim=1, keepdim=True)  # p(c)
    return (joint * torch.log(joint / (marginal / n_classes))).sum(dim=1).float()


def coverage_similarity(text: torch.Tensor) -> torch.Tensor:
    """``φ`` [M, M] for one class's candidate embeddings [M, D]: apricot's "cosine" similarity,
    the squared cosine (the embeddings need not be normalised)."""
    unit = torch.nn.functional.normalize(text, dim=-1)
    return (unit @ unit.T).square()


def labo_score(chosen: Sequence[int], disc: torch.Tensor, phi: torch.Tensor, alpha: float, beta: float) -> float:
    """``F(C)`` of the module docstring for one class's candidates: ``disc`` [M] and ``phi`` [M, M]."""
    if not chosen:
        return 0.0
    index = torch.as_tensor(list(chosen), dtype=torch.long)
    coverage = phi.clamp(min=0)[:, index].max(dim=1).values.sum()
    return float(alpha * disc[index].sum() + beta * coverage)


def greedy_select(disc: torch.Tensor, phi: torch.Tensor, k: int, alpha: float = 1e7, beta: float = 1.0) -> list[int]:
    """The ``k`` candidates chosen greedily for ``F`` (all of them when there are at most ``k``,
    as LaBo does), in the order chosen; ties go to the earlier candidate (apricot's naive greedy
    takes the first maximum too), so the choice is reproducible."""
    m = len(disc)
    if k >= m:
        return list(range(m))
    disc, phi = disc.double(), phi.double().clamp(min=0)
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
    alpha: float = 1e7,
    beta: float = 1.0,
) -> dict[str, list[str]]:
    """``k`` concepts per class by :func:`greedy_select`: ``text`` [M, D] holds the normalised
    embeddings of every class's candidates, flattened in ``classnames`` order; ``images`` and
    ``labels`` are the labelled images (the training shots) the discriminability is measured on."""
    sizes = [len(concepts[name]) for name in classnames]
    if sum(sizes) != len(text):
        raise DataError(f"concept selection: {len(text)} concept embeddings for {sum(sizes)} concepts")
    disc = mutual_information(class_similarity(images, labels, text, len(classnames)))
    out, start = {}, 0
    for name, size in zip(classnames, sizes):
        stop = start + size
        chosen = greedy_select(disc[start:stop], coverage_similarity(text[start:stop]), k, alpha, beta)
        out[name] = [concepts[name][i] for i in chosen]
        start = stop
    return out
