"""Photograph stand-ins for curation tests, benchmarks and the curation walk-through.

The built-in world's images are too alike for near-duplicate detection (a handful of shapes on
dark backgrounds); these have what copy detection keys on: a colour gradient, overlapping
shapes and lines at random places, a slight blur and sensor-like noise. Every image is a pure
function of the generator's state.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def photo(rng: np.random.Generator, width: int = 192, height: int = 144) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = (x * rng.uniform(-1, 1) + y * rng.uniform(-1, 1))[..., None]
    base = np.clip(c0 + (c1 - c0) * (t - t.min()) / (np.ptp(t) + 1e-6), 0, 255).astype(np.uint8)
    image = Image.fromarray(base)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(6, 14)):
        x0, y0 = rng.uniform(-20, width), rng.uniform(-20, height)
        box = [x0, y0, x0 + rng.uniform(10, 90), y0 + rng.uniform(10, 90)]
        colour = tuple(int(v) for v in rng.uniform(0, 255, 3))
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse(box, fill=colour)
        elif kind == 1:
            draw.rectangle(box, fill=colour)
        else:
            draw.line(box, fill=colour, width=int(rng.integers(2, 8)))
    blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(0.8))).astype(np.float32)
    noisy = blurred + rng.normal(0, 4, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def near_copies(image: Image.Image, crops: bool = False) -> dict[str, bytes]:
    """Encoded near-duplicates of ``image``: resizes and JPEG re-encodes (and centre crops)."""
    w, h = image.size
    out = {
        "resize50": encode(image.resize((w // 2, h // 2), Image.BICUBIC)),
        "resize150": encode(image.resize((w * 3 // 2, h * 3 // 2), Image.LANCZOS)),
        "jpeg40": encode(image, "JPEG", quality=40),
        "jpeg75": encode(image, "JPEG", quality=75),
    }
    if crops:
        out["crop95"] = encode(image.crop((w // 40, h // 40, w - w // 40, h - h // 40)))
        out["crop85"] = encode(image.crop((w * 3 // 40, h * 3 // 40, w - w * 3 // 40, h - h * 3 // 40)))
    return out
