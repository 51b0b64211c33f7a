"""Dynamic int8 quantization of a model's linear layers, for embedding on the CPU
(``vislang index --quantize int8``).

On a CPU without bf16 matrix units the towers' fp32 matrix products are nearly all of an index
job's time, and a plain loop over the same model is bound by the same products, so only other
numerics make embedding faster. Dynamic quantization keeps the weights of every ``nn.Linear``
in int8 (one scale per tensor) and quantizes each activation batch on the fly; attention,
norms and convolutions stay in fp32. The embeddings then differ slightly from the fp32
model's: ``agreement`` measures by how much, and BENCHMARKS.md records it beside the speed.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from vislang.errors import ConfigError
from vislang.models.layers import AttentionPool, Block, MultiheadAttention

QUANTIZE = ("int8",)


def check_quantize(quantize: str | None, device: str, precision: str) -> None:
    """Refuse, in one line, a quantization the job cannot run."""
    if quantize is None:
        return
    if quantize not in QUANTIZE:
        raise ConfigError(f"--quantize {quantize!r}: choose one of {', '.join(QUANTIZE)}")
    if torch.device(device).type != "cpu":
        raise ConfigError(f"--quantize {quantize} runs on the CPU only (not --device {device})")
    if precision != "fp32":
        raise ConfigError(f"--quantize {quantize} replaces --precision {precision}: give one of them")


def sliced_projections(model: nn.Module) -> set[nn.Module]:
    """The input projections that cross-attention slices by weight (an attention pool's, a
    decoder block's ``cross_attn``): they must stay ``nn.Linear``, since a quantized layer has
    no weight tensor to slice."""
    kept: set[nn.Module] = set()
    for module in model.modules():
        if isinstance(module, AttentionPool):
            kept.add(module.attn.in_proj)
        if isinstance(module, Block) and isinstance(getattr(module, "cross_attn", None), MultiheadAttention):
            kept.add(module.cross_attn.in_proj)
    return kept


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose linear layers compute in int8 (PyTorch's dynamic quantization:
    fbgemm / x86 kernels), all but :func:`sliced_projections`; its ``encode_image`` /
    ``encode_text`` are unchanged otherwise."""
    if not isinstance(model, nn.Module):
        raise ConfigError("--quantize int8 needs a PyTorch model (an ONNX export is not one)")
    from torch.ao.quantization import quantize_dynamic

    kept = sliced_projections(model)
    names = {name for name, m in model.named_modules() if isinstance(m, nn.Linear) and m not in kept}
    with warnings.catch_warnings():  # the torch.ao API warns that it moves to torchao; it works as is
        warnings.simplefilter("ignore")
        return quantize_dynamic(model.eval(), names, dtype=torch.qint8)


def agreement(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """How close two sets of normalised embeddings of the same inputs are: mean and minimum
    cosine, and the share of rows whose nearest neighbour among ``reference`` is unchanged."""
    cosine = np.sum(reference * other, axis=1)
    if len(reference) < 2:
        return {"mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min()), "same_neighbour": 1.0}
    self_match = np.eye(len(reference), dtype=bool)  # a row's own counterpart is never its neighbour
    ours = np.where(self_match, -np.inf, other @ reference.T).argmax(axis=1)
    theirs = np.where(self_match, -np.inf, reference @ reference.T).argmax(axis=1)
    return {
        "mean_cosine": float(cosine.mean()),
        "min_cosine": float(cosine.min()),
        "same_neighbour": float(np.mean(ours == theirs)),
    }
