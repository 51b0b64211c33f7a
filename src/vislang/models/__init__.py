"""Model construction from the typed ``model`` config section."""

from __future__ import annotations

from vislang.config import ModelConfig
from vislang.errors import ConfigError
from vislang.models.captioner import Captioner
from vislang.models.coca import CoCa
from vislang.models.text.decoder import TextDecoder
from vislang.models.text.transformer import TextTransformer
from vislang.models.two_tower import TwoTower
from vislang.models.vision.timm_tower import TimmTower
from vislang.models.vision.vit import VisionTransformer


def build_vision(cfg: ModelConfig, embed_dim: int | None):
    """The image tower ``model.vision.kind`` names: vislang's ViT or a timm model."""
    if cfg.vision.kind == "timm":
        if embed_dim is None:
            raise ConfigError("timm image towers serve the two-tower objectives (clip, siglip) so far, not captioners")
        return TimmTower(cfg.vision, embed_dim)
    return VisionTransformer(cfg.vision, embed_dim, cfg.attn_impl)


def build_two_tower(cfg: ModelConfig, vocab_size: int, pad_id: int) -> TwoTower:
    vision = build_vision(cfg, cfg.embed_dim)
    if cfg.text.pretrained:
        from vislang.models.text.pretrained import PretrainedTextTower

        text = PretrainedTextTower(cfg.text, cfg.embed_dim, pad_id)
    else:
        text = TextTransformer(cfg.text, vocab_size, cfg.embed_dim, pad_id, cfg.attn_impl)
    return TwoTower(vision, text, cfg.init_logit_scale, cfg.max_logit_scale, cfg.init_logit_bias)


def build_decoder(cfg: ModelConfig, vocab_size: int, pad_id: int, unimodal_depth: int, cls_token: bool) -> TextDecoder:
    t = cfg.text
    decoder = TextDecoder(
        vocab_size,
        t.context_length,
        t.width,
        t.heads,
        t.mlp_ratio,
        unimodal_depth,
        cfg.decoder.depth,
        pad_id,
        cls_token,
        cfg.attn_impl,
    )
    decoder.grad_checkpointing = t.grad_checkpointing
    return decoder


def build_captioner(cfg: ModelConfig, vocab_size: int, pad_id: int) -> Captioner:
    """Cap / CapPa: ViT tokens -> decoder of ``model.decoder.depth`` multimodal blocks."""
    vision = build_vision(cfg, None)
    return Captioner(vision, build_decoder(cfg, vocab_size, pad_id, 0, False), cfg.text.width)


def build_coca(cfg: ModelConfig, vocab_size: int, pad_id: int) -> CoCa:
    """CoCa: ``model.text.depth`` unimodal blocks (with CLS), then ``model.decoder.depth`` multimodal."""
    vision = build_vision(cfg, None)
    decoder = build_decoder(cfg, vocab_size, pad_id, cfg.text.depth, True)
    return CoCa(
        vision,
        decoder,
        cfg.embed_dim,
        cfg.text.width,
        cfg.decoder.n_queries,
        cfg.init_logit_scale,
        cfg.max_logit_scale,
    )


__all__ = [
    "Captioner",
    "CoCa",
    "TextDecoder",
    "TextTransformer",
    "TwoTower",
    "VisionTransformer",
    "build_captioner",
    "build_coca",
    "build_two_tower",
]
