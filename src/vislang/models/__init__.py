"""Model construction from the typed ``model`` config section."""

from __future__ import annotations

from vislang.config import ModelConfig
from vislang.models.text.transformer import TextTransformer
from vislang.models.two_tower import TwoTower
from vislang.models.vision.vit import VisionTransformer


def build_two_tower(cfg: ModelConfig, vocab_size: int, pad_id: int) -> TwoTower:
    vision = VisionTransformer(cfg.vision, cfg.embed_dim, cfg.attn_impl)
    text = TextTransformer(cfg.text, vocab_size, cfg.embed_dim, pad_id, cfg.attn_impl)
    return TwoTower(vision, text, cfg.init_logit_scale, cfg.max_logit_scale, cfg.init_logit_bias)


__all__ = ["TwoTower", "TextTransformer", "VisionTransformer", "build_two_tower"]
