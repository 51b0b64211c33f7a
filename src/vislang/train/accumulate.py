"""Forward and backward of one optimizer step, whole or in ``train.accum_steps`` micro-batches.

Objectives whose loss couples the samples only through their embeddings (CLIP, SigLIP:
``exact_accumulation``) accumulate exactly, as GradCache does (BASIC relies on it): embeddings of
every micro-batch are computed first without gradients, the loss over all of them (every micro-
batch's samples are negatives of every other's) is back-propagated to the embeddings, and each
micro-batch is then recomputed with gradients and back-propagated with its share of those
embedding gradients. The result is the gradient of the whole batch, while activations of only one
micro-batch are alive at a time. The random state is replayed per micro-batch, so FLIP masks of
the recomputation are those of the first pass; buffers (BatchNorm statistics) are updated once.

Other objectives (captioners, CoCa) accumulate plainly: each micro-batch's loss, weighted by its
share of the samples, is back-propagated in turn (CoCa's contrastive term then sees the negatives
of its micro-batch only).

Under DDP the plain path lets DDP average the gradients on the last micro-batch; the exact path
computes outside DDP's forward and averages the gradients itself (:func:`all_reduce_gradients`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor

from vislang.losses import full_precision
from vislang.objectives import Objective
from vislang.rng import rng_state, set_rng_state

Precision = Callable[[], contextlib.AbstractContextManager]
Scale = Callable[[torch.Tensor], torch.Tensor]


def split_batch(batch: dict[str, torch.Tensor], parts: int) -> list[dict[str, torch.Tensor]]:
    """``parts`` micro-batches of nearly equal size (fewer if the batch has fewer samples)."""
    n = len(batch["text"])  # every batch has captions (a texts source has no images)
    chunks = {k: torch.tensor_split(v, min(parts, n)) for k, v in batch.items()}
    return [{k: chunks[k][i] for k in batch} for i in range(min(parts, n))]


def backward(
    objective: Objective,
    batch: dict[str, torch.Tensor],
    accum_steps: int,
    precision: Precision,
    scale: Scale = lambda loss: loss,
    ddp: nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """Back-propagate the loss of ``batch`` (gradients accumulate into ``.grad``); returns the
    loss parts, detached. ``scale`` wraps the loss before backward (fp16's gradient scaler)."""
    forward = ddp if ddp is not None else objective
    if accum_steps <= 1:
        with precision():
            parts = forward(batch)
        scale(parts["loss"]).backward()
        return {k: v.detach() for k, v in parts.items()}
    micro = split_batch(batch, accum_steps)
    if objective.exact_accumulation:
        return _cached_backward(objective, micro, precision, scale, ddp is not None)
    total = sum(len(m["image"]) for m in micro)
    sums: dict[str, torch.Tensor] = {}
    for i, m in enumerate(micro):
        share = len(m["image"]) / total
        last = i == len(micro) - 1
        with ddp.no_sync() if ddp is not None and not last else contextlib.nullcontext():
            with precision():
                parts = forward(m)
            scale(parts["loss"] * share).backward()
        for k, v in parts.items():
            sums[k] = sums.get(k, 0) + v.detach() * share
    return sums


def _cached_backward(
    objective: Objective, micro: list[dict[str, torch.Tensor]], precision: Precision, scale: Scale, distributed: bool
) -> dict[str, torch.Tensor]:
    device = micro[0]["image"].device
    buffers = {name: b.clone() for name, b in objective.named_buffers()}
    states, embeddings = [], []
    with torch.no_grad():
        for m in micro:
            states.append(rng_state(device))
            with precision():
                embeddings.append(objective.embed(m))
    after = rng_state(device)
    for name, b in objective.named_buffers():
        b.copy_(buffers[name])

    cached = {k: torch.cat([e[k] for e in embeddings]).detach() for k in embeddings[0]}
    for value in cached.values():  # integer entries (FLYP's class labels) carry no gradient
        if value.is_floating_point():
            value.requires_grad_()
    with precision():
        parts = objective.loss_from_embeddings(cached)
    scale(parts["loss"]).backward()  # gradients of the cached embeddings, logit scale and bias

    offsets = dict.fromkeys(cached, 0)
    for m, state in zip(micro, states):
        set_rng_state(state, device)
        with precision():
            fresh = objective.embed(m)
        surrogate = 0.0
        for k, value in fresh.items():
            if cached[k].grad is None:  # labels, or embeddings the loss did not use
                continue
            rows = slice(offsets[k], offsets[k] + len(value))
            offsets[k] = rows.stop
            surrogate = surrogate + (full_precision(value) * full_precision(cached[k].grad[rows])).sum()
        if torch.is_tensor(surrogate):
            surrogate.backward()
    set_rng_state(after, device)
    if distributed:
        all_reduce_gradients(objective)
    return {k: v.detach() for k, v in parts.items()}


def all_reduce_gradients(module: nn.Module, group: dist.ProcessGroup | None = None) -> None:
    """Average the gradients of ``module``'s trainable parameters over the ranks (one flat
    all-reduce; a parameter without a gradient counts as zero). Parameters sharded by FSDP
    (DTensors) are left alone: FSDP reduce-scatters their gradients itself."""
    params = [p for p in module.parameters() if p.requires_grad and not isinstance(p, DTensor)]
    if not params:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.flatten() for p in params])
    dist.all_reduce(flat, group=group)
    flat /= dist.get_world_size(group)
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
        offset += p.numel()
