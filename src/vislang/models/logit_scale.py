"""The learnable logit scale (temperature) and optional bias of the contrastive models.

One definition for :class:`~vislang.models.two_tower.TwoTower` and :class:`~vislang.models.coca.CoCa`,
so the two cannot drift apart. The scale is stored as its log (CLIP: init 1/0.07), which keeps it
positive and makes steps multiplicative, and is clamped at ``max_logit_scale`` when read, because
an unbounded temperature makes contrastive training unstable. The bias is SigLIP's (none for
softmax contrastive losses). The parameters keep the names ``logit_scale`` and ``logit_bias``:
checkpoints and the weight converters address them by those names.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LogitScaleMixin:
    """Adds ``logit_scale`` / ``logit_bias`` parameters and ``scale()`` / ``bias()`` to an ``nn.Module``.

    A mixin rather than a submodule so the parameters sit on the model itself (``logit_scale``,
    not ``head.logit_scale``) and state dicts stay as they are.
    """

    logit_scale: nn.Parameter
    logit_bias: nn.Parameter | None
    max_log_scale: float

    def add_logit_scale(
        self, init_logit_scale: float, max_logit_scale: float, init_logit_bias: float | None = None
    ) -> None:
        """Create the parameters; call it from ``__init__`` where they belong in the parameter order."""
        self.logit_scale = nn.Parameter(torch.tensor(math.log(init_logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(init_logit_bias))) if init_logit_bias is not None else None
        self.max_log_scale = math.log(max_logit_scale)

    def scale(self) -> torch.Tensor:
        """The multiplicative logit scale (exp of the parameter, clamped), in fp32."""
        return self.logit_scale.float().clamp(max=self.max_log_scale).exp()

    def bias(self) -> torch.Tensor | None:
        """The additive logit bias in fp32, or None without one."""
        return None if self.logit_bias is None else self.logit_bias.float()
