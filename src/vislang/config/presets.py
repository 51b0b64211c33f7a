"""Named architectures: partial ``model`` config sections that ``model.preset`` expands.

The CLIP-paper geometries keep their published shapes (image 224, patch 32/16/14, widths
768/1024, text width 512/768, context 77, embedding 512/768). Fields given beside the preset
in a config override it.
"""

from __future__ import annotations

from typing import Any

# OpenAI CLIP's image normalisation (its training-set statistics), used by every CLIP release.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _clip(image: dict[str, Any], text: dict[str, Any], embed_dim: int, act: str = "gelu") -> dict[str, Any]:
    vision = {
        "image_size": 224,
        "stem": "patch",
        "patch_bias": False,
        "act": act,
        "pool": "cls",
        "mlp_ratio": 4.0,
        "image_mean": OPENAI_MEAN,
        "image_std": OPENAI_STD,
        **image,
    }
    return {
        "embed_dim": embed_dim,
        "vision": vision,
        "text": {"context_length": 77, "causal": True, "pool": "eot", "mlp_ratio": 4.0, "act": act, **text},
    }


_B32 = ({"patch_size": 32, "width": 768, "depth": 12, "heads": 12}, {"width": 512, "depth": 12, "heads": 8}, 512)
_B16 = ({"patch_size": 16, "width": 768, "depth": 12, "heads": 12}, {"width": 512, "depth": 12, "heads": 8}, 512)
_L14 = ({"patch_size": 14, "width": 1024, "depth": 24, "heads": 16}, {"width": 768, "depth": 12, "heads": 12}, 768)


PRESETS: dict[str, dict[str, Any]] = {
    # The demo's model (the config defaults): ~0.26M parameters, trains on a CPU in minutes.
    "tiny": {
        "embed_dim": 64,
        "vision": {
            "image_size": 48,
            "patch_size": 8,
            "width": 64,
            "depth": 3,
            "heads": 2,
            "mlp_ratio": 2.0,
            "stem": "conv",
            "pool": "mean",
        },
        "text": {"context_length": 18, "width": 64, "depth": 2, "heads": 2, "mlp_ratio": 2.0},
    },
    "small": {
        "embed_dim": 256,
        "vision": {
            "image_size": 64,
            "patch_size": 8,
            "width": 256,
            "depth": 6,
            "heads": 8,
            "mlp_ratio": 4.0,
            "stem": "conv",
        },
        "text": {"context_length": 32, "width": 256, "depth": 4, "heads": 8, "mlp_ratio": 4.0},
    },
    # The CLIP paper's geometries as OpenCLIP names them; "-quickgelu": the activation OpenAI's
    # original weights (and OpenCLIP's *-quickgelu releases) were trained with.
    "ViT-B-32": _clip(*_B32),
    "ViT-B-32-quickgelu": _clip(*_B32, act="quick_gelu"),
    "ViT-B-16": _clip(*_B16),
    "ViT-B-16-quickgelu": _clip(*_B16, act="quick_gelu"),
    "ViT-L-14": _clip(*_L14),
    "ViT-L-14-quickgelu": _clip(*_L14, act="quick_gelu"),
}
