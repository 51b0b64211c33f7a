"""Contrastive losses as pure functions of L2-normalised features.

``logit_scale`` is the multiplicative temperature (already exponentiated). With ``group`` (a
``torch.distributed`` process group) the features of all ranks are gathered with autograd and
each rank computes the rows of its own samples against the global batch ("local loss"): the
mean of the per-rank losses is the loss of the concatenated batch, so DDP's averaged gradients
are the global-batch gradients.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 tensors as fp32; fp32 and fp64 as they are (losses never run in half precision)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _gather(features: torch.Tensor, group: dist.ProcessGroup | None) -> tuple[torch.Tensor, int]:
    """All ranks' features concatenated (with autograd), and the offset of this rank's block."""
    if group is None:
        return features, 0
    from torch.distributed.nn.functional import all_gather

    gathered = torch.cat(all_gather(features, group=group), dim=0)
    return gathered, dist.get_rank(group) * features.shape[0]


def _gather_labels(labels: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    """All ranks' labels concatenated (no gradient: they are integers)."""
    if group is None:
        return labels
    gathered = [torch.empty_like(labels) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, labels.contiguous(), group=group)
    return torch.cat(gathered)


def _gather_varying(features: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    """All ranks' rows concatenated with autograd, when ranks hold different numbers of rows."""
    if group is None:
        return features
    from torch.distributed.nn.functional import all_gather

    sizes = [torch.zeros(1, dtype=torch.long, device=features.device) for _ in range(dist.get_world_size(group))]
    dist.all_gather(sizes, torch.tensor([features.shape[0]], device=features.device), group=group)
    longest = max(int(n) for n in sizes)
    padded = torch.cat([features, features.new_zeros(longest - features.shape[0], *features.shape[1:])])
    gathered = all_gather(padded, group=group)
    return torch.cat([g[: int(n)] for g, n in zip(gathered, sizes)])


def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    *,
    label_smoothing: float = 0.0,
    text_negatives: torch.Tensor | None = None,
    classes: torch.Tensor | None = None,
    group: dist.ProcessGroup | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP): mean of image→text and text→image cross-entropies over the batch.

    Pair i is the positive of row i; every other text (image) in the global batch is a negative.
    ``label_smoothing`` spreads that share of the target over all columns (ALIGN uses 0.1).
    ``text_negatives`` [N, D] are extra texts that match no image (NegCLIP's hard negatives):
    they join the image→text softmax only, so each image sees B + N candidate texts.
    ``classes`` [B] (FLYP on labelled images, whose texts are class prompts): pairs of the same
    class other than the pair itself are not negatives, so they leave both softmaxes; each image
    is contrasted with the prompts of the other classes only, and each prompt with their images.
    """
    all_images, offset = _gather(image_features, group)
    all_texts, _ = _gather(text_features, group)
    if text_negatives is not None:
        all_texts = torch.cat([all_texts, _gather_varying(text_negatives, group)])
    labels = torch.arange(image_features.shape[0], device=image_features.device) + offset
    logits_per_image = logit_scale * full_precision(image_features) @ full_precision(all_texts).T
    logits_per_text = logit_scale * full_precision(text_features) @ full_precision(all_images).T
    if classes is not None:
        if label_smoothing:
            raise ValueError("clip_loss: label_smoothing with classes would put mass on masked pairs")
        same = classes[:, None] == _gather_labels(classes, group)[None, :]
        same[torch.arange(len(classes), device=same.device), labels] = False  # the pair itself stays
        logits_per_text = logits_per_text.masked_fill(same, float("-inf"))
        extra = logits_per_image.shape[1] - same.shape[1]  # hard-negative columns are never masked
        same = torch.cat([same, same.new_zeros(same.shape[0], extra)], dim=1)
        logits_per_image = logits_per_image.masked_fill(same, float("-inf"))
    image_loss = F.cross_entropy(logits_per_image, labels, label_smoothing=label_smoothing)
    text_loss = F.cross_entropy(logits_per_text, labels, label_smoothing=label_smoothing)
    return (image_loss + text_loss) / 2


def siglip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float,
    *,
    text_negatives: torch.Tensor | None = None,
    group: dist.ProcessGroup | None = None,
    ring: bool = False,
    chunk: int = 0,
) -> torch.Tensor:
    """Sigmoid loss (SigLIP): -(1/B) Σ_i Σ_j log σ(z_ij (t·x_i·y_j + b)), z = +1 on pairs, -1 elsewhere.

    B is the number of images on this rank; with a group, j runs over the texts of all ranks.
    ``text_negatives`` are extra texts that are negatives (z = -1) for every image.
    ``ring`` (with a group): instead of gathering every rank's texts, pass text blocks around the
    ranks (SigLIP's chunked implementation): each rank computes B x B logits at a time.
    ``chunk`` > 0 computes the logits ``chunk`` texts at a time and recomputes them in the
    backward pass instead of keeping them, so the loss never holds more than B x chunk logits
    (every pair is independent, so the sum is exact).
    """
    image = full_precision(image_features)
    if ring and group is not None and dist.get_world_size(group) > 1:
        total = _sigmoid_sum(image, text_features, logit_scale, logit_bias, 0, chunk)
        passed = text_features
        for _ in range(dist.get_world_size(group) - 1):
            passed = _PassOn.apply(passed, group)  # the next block: the left neighbour's current one
            total = total + _sigmoid_sum(image, passed, logit_scale, logit_bias, None, chunk)
    else:
        all_texts, offset = _gather(text_features, group)
        total = _sigmoid_sum(image, all_texts, logit_scale, logit_bias, offset, chunk)
    if text_negatives is not None:
        total = total + _sigmoid_sum(
            image, _gather_varying(text_negatives, group), logit_scale, logit_bias, None, chunk
        )
    return total / image.shape[0]


def _sigmoid_sum(image, texts, logit_scale, logit_bias, offset: int | None, chunk: int) -> torch.Tensor:
    """Σ -log σ(z (t·x·y + b)) over all rows of ``image`` and all ``texts``; text ``i + offset`` is
    image i's positive (``offset`` None: every text is a negative)."""
    if chunk <= 0 or chunk >= texts.shape[0]:
        return _sigmoid_block(image, texts, logit_scale, logit_bias, offset)
    total = image.new_zeros(())
    for start in range(0, texts.shape[0], chunk):
        block_offset = None if offset is None else offset - start
        block = (image, texts[start : start + chunk], logit_scale, logit_bias, block_offset)
        total = total + checkpoint(_sigmoid_block, *block, use_reentrant=False)
    return total


def _sigmoid_block(image, texts, logit_scale, logit_bias, offset: int | None) -> torch.Tensor:
    logits = logit_scale * image @ full_precision(texts).T + logit_bias
    signs = -torch.ones_like(logits)
    if offset is not None:  # the positives that fall in this block of texts
        rows = torch.arange(image.shape[0], device=logits.device)
        inside = (rows + offset >= 0) & (rows + offset < texts.shape[0])
        signs[rows[inside], rows[inside] + offset] = 1.0
    return -F.logsigmoid(signs * logits).sum()


class _PassOn(torch.autograd.Function):
    """Send a tensor to the next rank of the ring and receive the previous rank's; the backward
    pass sends the gradient back the other way."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.group = group
        return _shift(x.contiguous(), group, +1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _shift(grad.contiguous(), ctx.group, -1), None


def _shift(x: torch.Tensor, group: dist.ProcessGroup, step: int) -> torch.Tensor:
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    received = torch.empty_like(x)
    to = dist.get_global_rank(group, (rank + step) % world)
    source = dist.get_global_rank(group, (rank - step) % world)
    ops = [dist.P2POp(dist.isend, x, to, group), dist.P2POp(dist.irecv, received, source, group)]
    for request in dist.batch_isend_irecv(ops):
        request.wait()
    return received
