"""The one translation layer from the ``model`` config section to model objects.

The model classes (:mod:`vislang.models`) take plain arguments and know nothing of config
types; this module is the only place that reads ``model.vision`` / ``model.text`` fields and
passes them on. Each tower's arguments carry the names of the config fields they come from, so
a field is mapped once, in the ``*_FIELDS`` sets below. The decoder's depth (and CoCa's query
count) belong to the objective's own section, so they arrive here as plain numbers.
"""

from __future__ import annotations

from vislang.config import ModelConfig
from vislang.errors import ConfigError
from vislang.models.captioner import Captioner
from vislang.models.coca import CoCa
from vislang.models.temporal import build_temporal
from vislang.models.text.decoder import TextDecoder
from vislang.models.text.pretrained import PretrainedTextTower
from vislang.models.text.transformer import TextTransformer
from vislang.models.two_tower import TwoTower
from vislang.models.vision.timm_tower import TimmTower
from vislang.models.vision.vit import VisionTransformer

# model.vision fields each image tower takes, as keyword arguments of the same names.
VIT_FIELDS = {
    "image_size",
    "patch_size",
    "width",
    "depth",
    "heads",
    "mlp_ratio",
    "stem",
    "pool",
    "patch_bias",
    "ln_pre",
    "proj",
    "act",
    "norm_eps",
    "pos_embed",
    "mask_ratio",
    "grad_checkpointing",
}
TIMM_FIELDS = {"timm_model", "timm_pretrained", "timm_kwargs", "pool", "proj", "mask_ratio", "grad_checkpointing"}
# model.text fields each text tower takes, as keyword arguments of the same names.
TEXT_FIELDS = {
    "context_length",
    "width",
    "depth",
    "heads",
    "mlp_ratio",
    "causal",
    "pool",
    "mask_padding",
    "proj_bias",
    "act",
    "norm_eps",
    "grad_checkpointing",
}
PRETRAINED_TEXT_FIELDS = {"context_length", "pool", "proj"}


def build_vision(model: ModelConfig, embed_dim: int | None) -> VisionTransformer | TimmTower:
    """The image tower ``model.vision.kind`` names: vislang's ViT or a timm model.

    ``embed_dim`` None asks for a token tower for a decoder (captioners, CoCa), which only the
    ViT provides so far: the decoders read ViT tokens and CoCa sizes its poolers from the ViT.
    """
    vision = model.vision
    if vision.kind == "timm":
        if embed_dim is None:
            raise ConfigError("timm image towers serve the two-tower objectives (clip, siglip) so far, not captioners")
        return TimmTower(embed_dim=embed_dim, **vision.model_dump(include=TIMM_FIELDS))
    return VisionTransformer(embed_dim, attn_impl=model.attn_impl, **vision.model_dump(include=VIT_FIELDS))


def build_text(model: ModelConfig, vocab_size: int, pad_id: int) -> TextTransformer | PretrainedTextTower:
    """The text tower: a local Hugging Face encoder when ``model.text.pretrained`` names one
    (its own vocabulary; ``vocab_size`` unused), else vislang's text transformer."""
    text = model.text
    if text.pretrained:
        fields = text.model_dump(include=PRETRAINED_TEXT_FIELDS)
        return PretrainedTextTower(text.pretrained, model.embed_dim, pad_id, **fields)
    fields = text.model_dump(include=TEXT_FIELDS)
    return TextTransformer(vocab_size, model.embed_dim, pad_id, attn_impl=model.attn_impl, **fields)


def build_two_tower(model: ModelConfig, vocab_size: int, pad_id: int) -> TwoTower:
    """CLIP / SigLIP: both towers projected to ``model.embed_dim``, with the logit scale (and bias)."""
    vision = build_vision(model, model.embed_dim)
    text = build_text(model, vocab_size, pad_id)
    v = model.vision
    temporal = build_temporal(
        v.temporal, model.embed_dim, v.max_frames, v.temporal_depth, v.temporal_heads, model.attn_impl
    )
    return TwoTower(vision, text, model.init_logit_scale, model.max_logit_scale, model.init_logit_bias, temporal)


def build_decoder(
    model: ModelConfig, vocab_size: int, pad_id: int, depth: int, unimodal_depth: int, cls_token: bool
) -> TextDecoder:
    """A text decoder of ``depth`` multimodal blocks after ``unimodal_depth`` text-only ones; it
    shares ``model.text``'s width, heads, MLP ratio, context length and gradient checkpointing."""
    t = model.text
    decoder = TextDecoder(
        vocab_size,
        t.context_length,
        t.width,
        t.heads,
        t.mlp_ratio,
        unimodal_depth,
        depth,
        pad_id,
        cls_token,
        model.attn_impl,
    )
    decoder.grad_checkpointing = t.grad_checkpointing
    return decoder


def build_captioner(model: ModelConfig, decoder_depth: int, vocab_size: int, pad_id: int) -> Captioner:
    """Cap / CapPa: ViT tokens -> a decoder of ``decoder_depth`` multimodal blocks (no unimodal ones)."""
    vision = build_vision(model, None)
    return Captioner(vision, build_decoder(model, vocab_size, pad_id, decoder_depth, 0, False), model.text.width)


def build_coca(model: ModelConfig, decoder_depth: int, n_queries: int, vocab_size: int, pad_id: int) -> CoCa:
    """CoCa: ``model.text.depth`` unimodal blocks (with CLS), then ``decoder_depth`` multimodal
    ones attending to ``n_queries`` pooled image tokens."""
    vision = build_vision(model, None)
    decoder = build_decoder(model, vocab_size, pad_id, decoder_depth, model.text.depth, True)
    return CoCa(
        vision,
        decoder,
        model.embed_dim,
        model.text.width,
        n_queries,
        model.init_logit_scale,
        model.max_logit_scale,
    )


__all__ = ["build_captioner", "build_coca", "build_decoder", "build_text", "build_two_tower", "build_vision"]
