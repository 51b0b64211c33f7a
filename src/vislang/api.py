"""Opening trained models: ``vislang.load(path) -> (model, tokenizer, preprocess)``.

A path is a checkpoint file, a run directory (its latest checkpoint is taken), a directory
written by ``vislang export`` or ``vislang convert --from`` (safetensors, no pickle), or an
OpenCLIP (``open_clip_config.json``) or Hugging Face CLIP/SigLIP directory, converted on the
fly, or an ONNX directory written by ``vislang export --format onnx`` (its ``onnx_config.json``
says ``"format": "vislang-onnx"``), whose towers onnxruntime runs. ``image_size`` opens a model
for another input size than it was trained at: its position embeddings are interpolated
(:mod:`vislang.models.positions`) and the preprocessing resizes to the new size. A checkpoint carries its config and tokenizer, so it opens without the run directory
around it. Nothing here imports the training package.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vislang.convert import peer_checkpoint
from vislang.data.transforms import ImageTransform, to_tensor
from vislang.errors import ConfigError
from vislang.experiment import RunConfig
from vislang.models.vision.vit import set_image_size
from vislang.objectives import Objective
from vislang.onnx.manifest import is_onnx_directory
from vislang.onnx.runtime import OnnxTwoTower, load_onnx_objective
from vislang.restore import load_objective as load_own
from vislang.restore import objective_from_checkpoint, with_inputs
from vislang.tokenizers import BPETokenizer

log = logging.getLogger(__name__)


def load_objective(
    path: str | Path, device: str | torch.device = "cpu", image_size: int | None = None
) -> tuple[Objective, BPETokenizer, RunConfig]:
    """The trained objective (in eval mode), its tokenizer and its config, from any supported
    path; ``image_size``: resized for images of that size (the config returned says so)."""
    if is_onnx_directory(path):  # by its manifest's "format" key
        objective, tokenizer, cfg = load_onnx_objective(path, device)
    elif (checkpoint := peer_checkpoint(path)) is None:
        objective, tokenizer, cfg = load_own(path, device)
    else:
        objective, tokenizer, cfg = objective_from_checkpoint(checkpoint, path)
        objective = objective.to(device)
    if image_size is not None:
        cfg, lines = at_image_size(objective, cfg, image_size)
        for line in lines:
            log.info("%s: %s", path, line)
    return objective, tokenizer, cfg


def at_image_size(objective: Objective, cfg: RunConfig, image_size: int) -> tuple[RunConfig, list[str]]:
    """Make ``objective`` take images of ``image_size``: its image positions interpolated in
    place. Returns its config saying the new size, and the log lines of what was resized."""
    if image_size == cfg.model.vision.image_size:
        return cfg, []
    if isinstance(objective.model, OnnxTwoTower):
        raise ConfigError(f"an ONNX export takes {cfg.model.vision.image_size}-px images only (its graph is fixed)")
    staged = with_inputs(cfg, image_size=image_size)  # refuses a size the patches do not divide
    return staged, set_image_size(objective, image_size)


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


def load(
    path: str | Path, device: str | torch.device = "cpu", image_size: int | None = None
) -> tuple[torch.nn.Module, BPETokenizer, Callable]:
    """(model with ``encode_image``/``encode_text``, tokenizer, preprocess) of a vislang checkpoint;
    ``image_size``: for images of that size, position embeddings interpolated."""
    objective, tokenizer, cfg = load_objective(path, device, image_size)
    return objective.model, tokenizer, make_preprocess(cfg)
