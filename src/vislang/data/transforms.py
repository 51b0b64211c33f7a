"""Image tensors for the model: uint8 HWC arrays -> normalised float NCHW tensors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def to_tensor(images: np.ndarray | torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """[N, H, W, 3] uint8 -> [N, 3, H, W] float32, scaled to [0, 1] then normalised per channel."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return x.sub_(mean_t).div_(std_t)


def resize_center_crop(image, size: int) -> np.ndarray:
    """A PIL image -> [size, size, 3] uint8: RGB, shortest side resized to ``size``, centre crop."""
    from PIL import Image

    image = image.convert("RGB")
    scale = size / min(image.size)
    w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((w, h), Image.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))
