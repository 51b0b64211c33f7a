"""Opening trained models: ``vislang.load(path) -> (model, tokenizer, preprocess)``.

A path is a checkpoint file, a run directory (its latest checkpoint is taken), a directory
written by ``vislang export`` or ``vislang convert --from`` (safetensors, no pickle), or an
OpenCLIP (``open_clip_config.json``) or Hugging Face CLIP/SigLIP directory, converted on the
fly, or an ONNX directory written by ``vislang export --format onnx`` (its ``onnx_config.json``
says ``"format": "vislang-onnx"``), whose towers onnxruntime runs. A checkpoint carries its config and tokenizer, so it opens without the run directory
around it. Nothing here imports the training package.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vislang.convert import peer_checkpoint
from vislang.data.transforms import ImageTransform, to_tensor
from vislang.experiment import RunConfig
from vislang.objectives import Objective
from vislang.onnx.manifest import is_onnx_directory
from vislang.onnx.runtime import load_onnx_objective
from vislang.restore import load_objective as load_own
from vislang.restore import objective_from_checkpoint
from vislang.tokenizers import BPETokenizer


def load_objective(path: str | Path, device: str | torch.device = "cpu") -> tuple[Objective, BPETokenizer, RunConfig]:
    """The trained objective (in eval mode), its tokenizer and its config, from any supported path."""
    if is_onnx_directory(path):  # by its manifest's "format" key
        return load_onnx_objective(path, device)
    checkpoint = peer_checkpoint(path)
    if checkpoint is None:
        return load_own(path, device)
    objective, tokenizer, cfg = objective_from_checkpoint(checkpoint, path)
    return objective.to(device), tokenizer, cfg


def make_preprocess(cfg: RunConfig) -> Callable:
    """A PIL image -> normalised [3, S, S] tensor (OpenCLIP's convention, so ``torch.stack`` over
    a list works); a list of images -> [N, 3, S, S]. Resized as the run's data were
    (``data.resize_mode``, ``data.interpolation``), without training augmentation, with PIL's
    resampling as OpenCLIP's preprocessing (identical tensors for a converted OpenCLIP model)."""
    v = cfg.model.vision
    transform = ImageTransform(
        v.image_size, cfg.data.resize_mode, interpolation=cfg.data.interpolation, pil_resize=True
    )

    def preprocess(images) -> torch.Tensor:
        if not isinstance(images, (list, tuple)):
            return to_tensor(transform(images)[None], v.image_mean, v.image_std)[0]
        arrays = np.stack([transform(image) for image in images])
        return to_tensor(arrays, v.image_mean, v.image_std)

    return preprocess


def load(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, BPETokenizer, Callable]:
    """(model with ``encode_image``/``encode_text``, tokenizer, preprocess) of a vislang checkpoint."""
    objective, tokenizer, cfg = load_objective(path, device)
    return objective.model, tokenizer, make_preprocess(cfg)
