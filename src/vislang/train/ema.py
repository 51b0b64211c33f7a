"""An exponential moving average of the trainable weights (``train.ema_decay``, ``train.ema_start``).

After optimizer step ``s`` (counted from 1) with weights ``θ_s``, the average ``e`` is::

    e_0 = θ_0                                   (the weights at the start of training)
    e_s = θ_s                                   for s <= ema_start  (the average copies)
    e_s = decay · e_{s-1} + (1 - decay) · θ_s   for s >  ema_start

Only trainable parameters are averaged: frozen ones and buffers (BatchNorm statistics, hard-
negative banks, masks) cannot drift, so the averaged model takes them from the raw one as they
are. The update is PyTorch's own EMA kernel (``torch.optim.swa_utils.get_ema_multi_avg_fn``: one
fused lerp over all tensors). ``AveragedModel`` itself is not used: it deep-copies the whole
objective (frozen towers, buffers, a process group, FSDP's hooks), can only copy on its first
update where ``ema_start`` copies up to a chosen step, and with ``use_buffers`` averages the
buffers that are copied here.

The raw weights go on training; evaluation during training swaps the average in
(:meth:`WeightEMA.applied`) and back, bit for bit. A checkpoint holds both: ``model`` (raw, to
continue training) and ``ema`` (the averaged trainable parameters by name), which
:mod:`vislang.restore` lays over ``model`` when a checkpoint is loaded for use, so
``vislang.load``, ``vislang eval`` and ``vislang export`` see the average.

Under FSDP the copies are sharded like their parameters; checkpoints hold them in full.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.optim.swa_utils import get_ema_multi_avg_fn

from vislang.errors import CheckpointError


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor (gathered from every rank when FSDP shards it: a collective)."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor.detach()


class ParameterCopy:
    """A copy of a module's trainable parameters, by name, taken when it is made: what EMA
    averages into and L2-SP pulls toward. It is part of a run's state, saved and loaded whole."""

    def __init__(self, module: nn.Module) -> None:
        named = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
        self.names = [name for name, _ in named]
        self.params = [p for _, p in named]
        with torch.no_grad():
            self.copies = [p.detach().clone() for p in self.params]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The copies by parameter name, unsharded (a collective under FSDP: every rank calls it)."""
        return {name: full_tensor(copy) for name, copy in zip(self.names, self.copies)}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor], what: str = "checkpoint") -> None:
        """Restore the copies saved by :meth:`state_dict`; other names or shapes are one line."""
        if not isinstance(state, dict) or set(state) != set(self.names):
            extra = sorted(set(state) - set(self.names)) if isinstance(state, dict) else []
            missing = [n for n in self.names if not isinstance(state, dict) or n not in state]
            name = (missing or extra or ["?"])[0]
            raise CheckpointError(f"{what}: the saved copy does not match the trainable parameters (at {name})")
        for name, copy in zip(self.names, self.copies):
            saved = state[name]
            if tuple(saved.shape) != tuple(copy.shape):
                raise CheckpointError(
                    f"{what}: {name} has shape {tuple(saved.shape)}, the model needs {tuple(copy.shape)}"
                )
            if isinstance(copy, DTensor):  # each rank cuts its own shard: no communication
                saved = distribute_tensor(saved.to(copy.device), copy.device_mesh, copy.placements, src_data_rank=None)
            copy.copy_(saved)


class WeightEMA(ParameterCopy):
    """The moving average of ``module``'s trainable weights, started from their current values."""

    def __init__(self, module: nn.Module, decay: float, start: int = 0) -> None:
        super().__init__(module)
        self.decay, self.start = decay, start
        self._average = get_ema_multi_avg_fn(decay)

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold in the weights after optimizer step ``step`` (counted from 1)."""
        current = [p.detach() for p in self.params]
        if step <= self.start:
            for copy, value in zip(self.copies, current):
                copy.copy_(value)
        else:  # one fused kernel per kind: FSDP's sharded tensors do not mix with plain ones
            for sharded in (True, False):
                pairs = [(c, v) for c, v in zip(self.copies, current) if isinstance(v, DTensor) == sharded]
                if pairs:
                    self._average([c for c, _ in pairs], [v for _, v in pairs], step)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the module while the block runs; the raw ones after it,
        restored exactly (evaluation must not change what training continues from)."""
        with torch.no_grad():
            raw = [p.detach().clone() for p in self.params]
            for p, copy in zip(self.params, self.copies):
                p.copy_(copy)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, value in zip(self.params, raw):
                    p.copy_(value)
