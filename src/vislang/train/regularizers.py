"""Penalties on the weights that the loop adds to the objective's loss: each is a callable that
returns a scalar tensor, is back-propagated beside the data loss and logged under its name.

L2-SP (Li, Grandvalet and Davoine, "Explicit inductive bias for transfer learning with
convolutional networks", 2018) is weight decay toward the starting point instead of toward zero:

    Ω(θ) = (l2_sp / 2) · Σ ||θ − θ₀||²,   so that   ∂Ω/∂θ = l2_sp · (θ − θ₀)

over every trainable parameter, with ``θ₀`` the weights at the start of training (after
``model.vision.init_from`` or a converted checkpoint: the weights being transferred). The
paper's Ω applies to all the transferred weights, so biases, norm gains and the logit scale are
included: unlike decay toward zero, pulling them toward their pretrained values does not shrink
them. Frozen parameters are left out (they cannot move). A head the fine-tune starts fresh
(or from the zero-shot classifier) is anchored at its starting value too, which the paper's
separate penalty on new layers would treat as plain weight decay; set ``train.l2_sp`` with that
in mind. ``θ₀`` is saved in every checkpoint (``regularizers.l2_sp``), so resuming is exact
even when the starting weights came from a file that has since changed.

The penalty goes through the optimizer like the data loss (an L2 term in the loss, as in the
paper), not as AdamW's decoupled decay; ``train.weight_decay: 0`` makes it the only decay.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor

from vislang.train.ema import ParameterCopy


class L2SP(ParameterCopy):
    """``strength / 2 · Σ ||θ − θ₀||²`` over ``module``'s trainable parameters, θ₀ taken now."""

    def __init__(self, module: nn.Module, strength: float) -> None:
        super().__init__(module)
        self.strength = strength

    def __call__(self) -> torch.Tensor:
        """The penalty, differentiable in the parameters. Under FSDP each rank back-propagates
        through its own shards only (each shard's gradient is then exact); the value is summed
        over the ranks so that every rank logs the whole penalty."""
        plain, sharded = [], []
        for p, start in zip(self.params, self.copies):
            if isinstance(p, DTensor):
                sharded.append((p.to_local() - start.to_local()).square().sum())
            else:
                plain.append((p - start).square().sum())
        local = torch.stack(plain + sharded).sum()  # the rules refuse a model with nothing to train
        if sharded and dist.is_initialized():
            mine = torch.stack(sharded).sum().detach()
            everyone = mine.clone()
            dist.all_reduce(everyone)
            local = local + (everyone - mine)  # the other ranks' shards: value only, no gradient
        return 0.5 * self.strength * local
