"""Pure metric functions on score matrices (higher score = better match).

Two conventions for tied scores, named in every result:

- ``clip_benchmark`` (the default for zero-shot and retrieval, for parity): ranks are
  ``torch.topk``'s, as CLIP_benchmark computes them, so a tie is broken by topk's own order.
  Duplicate captions (real caption sets have many) tie exactly, which is where the two differ.
- ``expected``: a correct item tied with k others gets 1/(k+1) credit (the expected value of a
  random tie-break), so a text encoder that cannot tell two captions apart scores chance, not
  100%. Candidate probes (the true caption first) always use it: topk would favour position 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

TIES = ("clip_benchmark", "expected")


def _credit(correct: torch.Tensor, scores: torch.Tensor, k: int) -> torch.Tensor:
    """Expected top-k hit of each row's correct score under random tie-breaking."""
    above = (scores > correct[:, None]).sum(dim=1)
    tied = (scores == correct[:, None]).sum(dim=1)  # includes the correct item itself
    return _credit_from_counts(above.float(), tied.float(), k)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy of [N, C] class scores against [N] labels."""
    correct = scores.gather(1, labels[:, None])[:, 0]
    return {f"top{k}": _credit(correct, scores, k).mean().item() for k in ks}


def candidate_credit(scores: torch.Tensor) -> torch.Tensor:
    """Per row of [N, K]: 1 if candidate 0 (the true one) scores highest, tie-break credit if tied."""
    return _credit(scores[:, 0], scores, 1)


def candidate_accuracy(scores: torch.Tensor) -> float:
    """Share of rows of [N, K] where candidate 0 (the true one) scores highest."""
    return candidate_credit(scores).mean().item()


def retrieval_recall(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_image: torch.Tensor,
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ks: Sequence[int] = (1, 5, 10),
    chunk: int = 1024,
    pair_score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Recall@k in both directions; ``text_image[j]`` is the image text j describes.

    text→image: the described image is among the top k images. image→text: any of the image's
    texts is among the top k texts. Every image–text score is computed once, ``chunk`` images
    at a time, so memory is O(chunk × N_texts) and an expensive scorer (a captioner's
    log-likelihood) runs N × M times, not twice that. ``pair_score(images[M], texts[M]) -> [M]``
    gives each text's score with its own image (default: the diagonal of ``score``, in chunks).
    """
    n_images, n_texts = image_features.shape[0], text_features.shape[0]
    own_images = image_features[text_image]
    if pair_score is None:
        pair_score = lambda a, b: score(a, b).diagonal()  # noqa: E731
    correct = torch.cat(
        [pair_score(own_images[s : s + chunk], text_features[s : s + chunk]) for s in range(0, n_texts, chunk)]
    ).float()
    above = torch.zeros(n_texts, device=correct.device)
    tied = torch.ones(n_texts, device=correct.device)  # the correct image itself
    i2t = {k: 0.0 for k in ks}
    for start in range(0, n_images, chunk):
        scores = score(image_features[start : start + chunk], text_features).float()  # [chunk, N_txt]
        rows = torch.arange(start, start + scores.shape[0], device=scores.device)
        own = text_image[None, :] == rows[:, None]
        # text→image: count the other images that beat or tie each text's own image
        above += ((scores > correct[None, :]) & ~own).sum(dim=0)
        tied += ((scores == correct[None, :]) & ~own).sum(dim=0)
        # image→text: the best own text competes with the other images' texts
        best = scores.masked_fill(~own, float("-inf")).max(dim=1).values
        others = scores.masked_fill(own, float("-inf"))
        for k in ks:
            i2t[k] += _credit(best, torch.cat([best[:, None], others], dim=1), k).sum().item()
    out = {f"text_to_image/R@{k}": _credit_from_counts(above, tied, k).mean().item() for k in ks}
    out |= {f"image_to_text/R@{k}": v / n_images for k, v in i2t.items()}
    return out


def _credit_from_counts(above: torch.Tensor, tied: torch.Tensor, k: int) -> torch.Tensor:
    return ((k - above).clamp(min=0) / tied).clamp(max=1.0)


def classification_metrics(
    scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5), ties: str = "clip_benchmark"
) -> dict[str, float]:
    """Top-k accuracy and mean per-class recall of [N, C] class scores against [N] labels.

    ``clip_benchmark``: the classes of ``topk(max(ks))`` (its first k columns for each k), and
    recall from ``argmax``, averaged over the classes present in ``labels`` (scikit-learn's
    balanced accuracy). ``expected``: tie-aware credit for both."""
    labels = labels.to(scores.device)
    present = labels.unique()
    if ties == "clip_benchmark":
        top = scores.topk(max(ks), dim=1, largest=True, sorted=True).indices
        hits = top == labels[:, None]
        out = {f"top{k}": hits[:, :k].any(dim=1).float().mean().item() for k in ks}
        first = (scores.argmax(dim=1) == labels).double()
    elif ties == "expected":
        correct = scores.gather(1, labels[:, None])[:, 0]
        out = {f"top{k}": _credit(correct, scores, k).mean().item() for k in ks}
        first = _credit(correct, scores, 1).double()
    else:
        raise ValueError(f"ties must be one of {TIES}, not {ties!r}")
    out["mean_per_class_recall"] = torch.stack([first[labels == c].mean() for c in present]).mean().item()
    return out


def retrieval_recall_topk(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_image: torch.Tensor,
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ks: Sequence[int] = (1, 5, 10),
    chunk: int = 1024,
) -> dict[str, float]:
    """Recall@k both ways under CLIP_benchmark's convention: a query scores at k when any of its
    positives is among ``topk(k)`` of its row of ``texts @ images.T`` (texts' rows for
    text→image, its transpose's for image→text), computed ``chunk`` rows at a time (memory
    O(chunk × N)). For embedding scores, where computing a block twice is cheap."""
    n_images, n_texts = image_features.shape[0], text_features.shape[0]
    text_image = text_image.to(image_features.device)
    t2i = {k: 0 for k in ks}
    for start in range(0, n_texts, chunk):
        rows = score(image_features, text_features[start : start + chunk]).T.float()  # [chunk, N_img]
        own = text_image[start : start + chunk]
        for k in ks:
            t2i[k] += (rows.topk(min(k, n_images), dim=1).indices == own[:, None]).any(dim=1).sum().item()
    i2t = {k: 0 for k in ks}
    for start in range(0, n_images, chunk):
        rows = score(image_features[start : start + chunk], text_features).float()  # [chunk, N_txt]
        ids = torch.arange(start, start + rows.shape[0], device=rows.device)
        for k in ks:
            top = rows.topk(min(k, n_texts), dim=1).indices
            i2t[k] += (text_image[top] == ids[:, None]).any(dim=1).sum().item()
    out = {f"text_to_image/R@{k}": v / n_texts for k, v in t2i.items()}
    out |= {f"image_to_text/R@{k}": v / n_images for k, v in i2t.items()}
    return out
