"""Image tensors for the model: uint8 HWC arrays -> normalised float NCHW tensors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def to_tensor(images: np.ndarray | torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """[N, H, W, 3] uint8 -> [N, 3, H, W] float32, scaled to [0, 1] then normalised per channel;
    clips [N, T, H, W, 3] -> [N, T, 3, H, W] the same way."""
    x = torch.as_tensor(images)
    x = (x.permute(0, 1, 4, 2, 3) if x.dim() == 5 else x.permute(0, 3, 1, 2)).float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return x.sub_(mean_t).div_(std_t)


class ImageTransform:
    """A decoded PIL image -> [size, size, 3] uint8, the way a source's images enter the model.

    ``resize_mode`` (as OpenCLIP's): "shortest" resizes the shortest side to ``size`` and crops
    the centre; "longest" resizes the longest side and pads to a square with ``fill``; "squash"
    resizes to a square ignoring the aspect ratio. ``random_crop`` replaces it while training by
    a random-resized crop (area share ``scale``, aspect ``ratio``; OpenCLIP uses scale 0.9–1.0),
    whose parameters come from the given numpy generator so that a sample's crop is a pure
    function of its position (exact resume). Resizing is torchvision's with antialias,
    ``interpolation`` "bicubic" or "bilinear"; ``pil_resize`` resizes with PIL instead, as
    OpenCLIP's and Hugging Face's image processors do (the preprocessing of a loaded model).
    """

    def __init__(
        self,
        size: int,
        resize_mode: str = "shortest",
        random_crop: bool = False,
        scale: tuple[float, float] = (0.9, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        fill: int = 0,
        interpolation: str = "bicubic",
        pil_resize: bool = False,
    ) -> None:
        self.size, self.resize_mode, self.random_crop = size, resize_mode, random_crop
        self.interpolation, self.pil_resize = interpolation, pil_resize
        self.scale, self.ratio, self.fill = scale, ratio, fill

    def _crop_box(self, width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        area = width * height
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = np.exp(rng.uniform(np.log(self.ratio[0]), np.log(self.ratio[1])))
            w, h = round(np.sqrt(target * aspect)), round(np.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
        side = min(width, height)  # fall back to the centre square
        return (height - side) // 2, (width - side) // 2, side, side

    def __call__(self, image, rng: np.random.Generator | None = None) -> np.ndarray:
        import torchvision.transforms.v2.functional as TF
        from torchvision.transforms import InterpolationMode

        mode, size = InterpolationMode(self.interpolation), self.size
        image = image.convert("RGB")
        if self.random_crop and rng is not None:
            top, left, h, w = self._crop_box(image.width, image.height, rng)
            x = TF.resized_crop(
                TF.pil_to_tensor(image), top, left, h, w, [size, size], interpolation=mode, antialias=True
            )
            return x.permute(1, 2, 0).numpy()
        if self.resize_mode == "squash":
            target: int | list[int] = [size, size]
        elif self.resize_mode == "longest":
            scale = size / max(image.width, image.height)
            target = [max(1, round(image.height * scale)), max(1, round(image.width * scale))]
        else:
            target = size
        # PIL's resampling (on the PIL image) is what OpenCLIP's transforms do; the tensor kernel
        # differs from it by rounding (up to ~2/255) and is several times faster.
        if self.pil_resize:
            x = TF.pil_to_tensor(TF.resize(image, target, interpolation=mode))
        else:
            x = TF.resize(TF.pil_to_tensor(image), target, interpolation=mode, antialias=True)
        if self.resize_mode == "longest":
            h, w = x.shape[1:]
            pad_left, pad_top = (size - w) // 2, (size - h) // 2
            x = TF.pad(x, [pad_left, pad_top, size - w - pad_left, size - h - pad_top], fill=self.fill)
        elif self.resize_mode == "shortest":
            x = TF.center_crop(x, [size, size])
        return x.permute(1, 2, 0).numpy()
