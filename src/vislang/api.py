"""Opening trained models: ``vislang.load(path) -> (model, tokenizer, preprocess)``.

A path is a checkpoint file, a run directory (its latest checkpoint is taken), a directory
written by ``vislang export`` or ``vislang convert --from`` (safetensors, no pickle), or an
OpenCLIP (``open_clip_config.json``) or Hugging Face CLIP/SigLIP directory, converted on the fly. A checkpoint carries its config and
tokenizer, so it opens without the run directory around it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vislang.config import RunConfig
from vislang.data.transforms import ImageTransform, to_tensor
from vislang.errors import CheckpointError
from vislang.export import is_export, read_export
from vislang.objectives import build_objective
from vislang.objectives.base import Objective
from vislang.tokenizers import BPETokenizer
from vislang.train.checkpoint import load_checkpoint


def load_objective(path: str | Path, device: str | torch.device = "cpu") -> tuple[Objective, BPETokenizer, RunConfig]:
    """The trained objective (in eval mode), its tokenizer and its config."""
    from vislang.convert import peer_checkpoint

    checkpoint = peer_checkpoint(path)
    if checkpoint is None:
        checkpoint = read_export(path) if is_export(path) else load_checkpoint(path)
    try:
        cfg = RunConfig.model_validate(checkpoint["config"])
        tokenizer = BPETokenizer.from_json(checkpoint["tokenizer"], cfg.model.text.context_length)
        objective = build_objective(cfg, tokenizer.vocab_size, tokenizer.pad_id)
        objective.load_state_dict(checkpoint["model"])
    except (KeyError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: not a vislang checkpoint ({str(error).splitlines()[0]})") from None
    return objective.to(device).eval(), tokenizer, cfg


def make_preprocess(cfg: RunConfig) -> Callable:
    """PIL image(s) -> normalised [N, 3, S, S] tensor, resized as the run's data were
    (``data.resize_mode``, ``data.interpolation``), without training augmentation, with PIL's
    resampling as OpenCLIP's preprocessing (identical tensors for a converted OpenCLIP model)."""
    v = cfg.model.vision
    transform = ImageTransform(
        v.image_size, cfg.data.resize_mode, interpolation=cfg.data.interpolation, pil_resize=True
    )

    def preprocess(images) -> torch.Tensor:
        images = images if isinstance(images, (list, tuple)) else [images]
        arrays = np.stack([transform(image) for image in images])
        return to_tensor(arrays, v.image_mean, v.image_std)

    return preprocess


def load(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, BPETokenizer, Callable]:
    """(model with ``encode_image``/``encode_text``, tokenizer, preprocess) of a vislang checkpoint."""
    objective, tokenizer, cfg = load_objective(path, device)
    return objective.model, tokenizer, make_preprocess(cfg)
