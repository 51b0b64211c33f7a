"""LoRA fine-tuning (``train.lora``): low-rank adapters on chosen Linear layers, applied by ``peft``.

Each targeted ``nn.Linear`` with weight ``W`` (out x in) becomes peft's LoRA layer computing
``W x + (alpha / rank) · B A x``, with ``A`` (rank x in, Kaiming-uniform) and ``B`` (out x rank,
zeros, so training starts from the pretrained function). The adapters are injected into the
objective in place (``peft.inject_adapter_in_model``), not wrapped in a ``PeftModel``: the
objective keeps its own classes, so the one loop, the evaluators and the scoring API run it
unchanged. Only the adapters train: :func:`lora_rules` adds a last parameter rule freezing every
other parameter, after the towers' locks and ``train.param_rules`` (which may still freeze
adapters, or scale their learning rate; layer-wise decay scales them by their block's depth).

Checkpoints hold the adapter weights with the rest of the state dict, so resuming is exact.
Loading for use and ``vislang export`` merge them (:mod:`vislang.restore`).

Targets are regular expressions matched whole against module paths of the objective. A pattern
must match at least one Linear, and the input projection of a cross-attention (a decoder's
``cross_attn``, an attention-pooling head) is refused: that layer is applied through its weight
matrix split into query and key/value rows, never called, so an adapter on it would be ignored.
"""

from __future__ import annotations

import re

from torch import nn

from vislang.config.train import LoraConfig, ParamRule
from vislang.errors import ConfigError
from vislang.models.layers import AttentionPool, Block, MultiheadAttention
from vislang.restore import inject_adapters

# parameter names peft gives the adapters: PATH.lora_A.<adapter>.weight, PATH.lora_B.<adapter>.weight
ADAPTER = r"\.lora_[AB]\."


def applied_by_weight(module: nn.Module) -> set[str]:
    """Paths of the Linear layers that the model never calls (cross-attention input projections)."""
    owners = {}
    for name, m in module.named_modules():
        if isinstance(m, Block) and isinstance(getattr(m, "cross_attn", None), MultiheadAttention):
            owners[f"{name}.cross_attn" if name else "cross_attn"] = m.cross_attn
        if isinstance(m, AttentionPool):
            owners[f"{name}.attn" if name else "attn"] = m.attn
    return {f"{path}.in_proj" for path in owners}


def lora_targets(module: nn.Module, lora: LoraConfig) -> list[str]:
    """The module paths of the Linear layers ``lora.targets`` selects, in module order. A pattern
    that matches no Linear, or one that selects a layer an adapter cannot act on, is one line."""
    linears = [name for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    uncalled = applied_by_weight(module)
    chosen: set[str] = set()
    for pattern in lora.targets:
        hits = [name for name in linears if re.fullmatch(pattern, name)]
        if not hits:
            example = f" (Linear layers are named like {linears[0]!r})" if linears else ""
            raise ConfigError(f"train.lora.targets: {pattern!r} matches no Linear layer of the model{example}")
        refused = [name for name in hits if name in uncalled]
        if refused:
            raise ConfigError(
                f"train.lora.targets: {pattern!r} selects {refused[0]}, a cross-attention input projection the "
                "model applies through its weight, so an adapter there would be ignored; leave it out"
            )
        chosen.update(hits)
    return [name for name in linears if name in chosen]


def adapter_parameters(module: nn.Module) -> int:
    """How many adapter weights ``module`` holds."""
    return sum(p.numel() for name, p in module.named_parameters() if re.search(ADAPTER, name))


def apply_lora(objective: nn.Module, lora: LoraConfig) -> str:
    """Inject rank-``lora.rank`` adapters into the targeted Linear layers of ``objective``, in
    place; returns the run-log note with the adapted layers and the trainable share."""
    names = lora_targets(objective, lora)
    inject_adapters(objective, lora, names)
    adapters = adapter_parameters(objective)
    total = sum(p.numel() for p in objective.parameters())
    return (
        f"LoRA rank {lora.rank}, alpha {lora.alpha:g}: {len(names)} Linear layers adapted, {adapters:,} adapter "
        f"parameters train ({100 * adapters / total:.2f}% of {total:,}; the rest frozen)"
    )


def lora_rules(lora: LoraConfig | None) -> list[ParamRule]:
    """The parameter rule that leaves only the adapters of the model trainable, applied after all
    others (none without ``train.lora``); what the objective adds beside the model (a
    classification head) trains as it would without LoRA."""
    return [] if lora is None else [ParamRule(match=rf"^model\.(?!.*{ADAPTER})", freeze=True)]
