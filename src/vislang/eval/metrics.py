"""Pure metric functions on score matrices (higher score = better match).

Ties are never resolved in the model's favour: a correct item tied with k others gets 1/(k+1)
credit (the expected value of a random tie-break), so a text encoder that cannot tell two
captions apart scores chance, not 100%.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def _credit(correct: torch.Tensor, scores: torch.Tensor, k: int) -> torch.Tensor:
    """Expected top-k hit of each row's correct score under random tie-breaking."""
    above = (scores > correct[:, None]).sum(dim=1)
    tied = (scores == correct[:, None]).sum(dim=1)  # includes the correct item itself
    slots = (k - above).clamp(min=0, max=None)
    return torch.minimum(slots.float() / tied.float(), torch.ones_like(correct))


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy of [N, C] class scores against [N] labels."""
    correct = scores.gather(1, labels[:, None])[:, 0]
    return {f"top{k}": _credit(correct, scores, k).mean().item() for k in ks}


def candidate_accuracy(scores: torch.Tensor) -> float:
    """Share of rows of [N, K] where candidate 0 (the true one) scores highest."""
    return _credit(scores[:, 0], scores, 1).mean().item()


def retrieval_recall(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_image: torch.Tensor,
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ks: Sequence[int] = (1, 5, 10),
    chunk: int = 1024,
) -> dict[str, float]:
    """Recall@k in both directions; ``text_image[j]`` is the image text j describes.

    text→image: the described image is among the top k images. image→text: any of the image's
    texts is among the top k texts. Scores are computed ``chunk`` rows at a time, so memory is
    O(chunk × N), never O(N²).
    """
    n_images, n_texts = image_features.shape[0], text_features.shape[0]
    t2i = {k: 0.0 for k in ks}
    for start in range(0, n_texts, chunk):
        scores = score(image_features, text_features[start : start + chunk]).T  # [chunk, N_img]
        correct = scores.gather(1, text_image[start : start + chunk, None])[:, 0]
        for k in ks:
            t2i[k] += _credit(correct, scores, k).sum().item()
    i2t = {k: 0.0 for k in ks}
    for start in range(0, n_images, chunk):
        scores = score(image_features[start : start + chunk], text_features)  # [chunk, N_txt]
        rows = torch.arange(start, start + scores.shape[0], device=scores.device)
        own = text_image[None, :] == rows[:, None]
        best = scores.masked_fill(~own, float("-inf")).max(dim=1).values
        others = scores.masked_fill(own, float("-inf"))
        for k in ks:  # the best own text competes with the other images' texts
            i2t[k] += _credit(best, torch.cat([best[:, None], others], dim=1), k).sum().item()
    out = {f"text_to_image/R@{k}": v / n_texts for k, v in t2i.items()}
    out |= {f"image_to_text/R@{k}": v / n_images for k, v in i2t.items()}
    return out
