"""Hugging Face ``CLIPModel`` / ``SiglipModel`` directories <-> vislang two-tower models.

A directory holds ``config.json`` (``model_type`` "clip" or "siglip" with ``text_config`` and
``vision_config``) and ``model.safetensors``. The layouts differ from vislang's in names, in
separate q/k/v projections (vislang fuses them in one matrix, rows q, k, v) and, for SigLIP, in
the parts a released SigLIP has and CLIP lacks: patch-embedding bias, no pre-norm, attention
pooling head, no image projection, a text head with bias read at the context's final position,
and a [1]-shaped logit bias. Only what these towers compute is converted; the functions refuse
configs whose options vislang does not reproduce.
"""

from __future__ import annotations

from typing import Any

import torch

from vislang.convert.constants import OPENAI_PREPROCESS
from vislang.convert.weight_map import BATCH_DIM, CLS_TOKEN, Entry, WeightMap, fused_rows, scalar, under
from vislang.errors import ConfigError

_ACT_FROM_HF = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh"}
_ACT_TO_HF = {v: k for k, v in _ACT_FROM_HF.items()}
# HF SigLIP's image processor: squash to the square size, mean = std = 0.5, bicubic.
SIGLIP_PREPROCESS = {
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "interpolation": "bicubic",
    "resize_mode": "squash",
}
# HF CLIP's image processor prepares images as OpenAI did.
CLIP_PREPROCESS = OPENAI_PREPROCESS


def _act(name: str, where: str) -> str:
    if name not in _ACT_FROM_HF:
        raise ConfigError(f"HF {where}.hidden_act={name!r} is not supported ({', '.join(_ACT_FROM_HF)})")
    return _ACT_FROM_HF[name]


def _tower(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    width = cfg.get("hidden_size", 768 if where == "vision_config" else 512)
    return {
        "width": width,
        "depth": cfg.get("num_hidden_layers", 12),
        "heads": cfg.get("num_attention_heads", 12 if where == "vision_config" else 8),
        "mlp_ratio": cfg.get("intermediate_size", 4 * width) / width,
        "act": _act(cfg.get("hidden_act", "quick_gelu"), where),
    }


def model_config_from_hf(hf: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(kind "clip" or "siglip", vislang ``model`` section) of a HF ``config.json``."""
    kind = hf.get("model_type")
    if kind not in ("clip", "siglip"):
        raise ConfigError(f"HF model_type {kind!r} is not supported (clip or siglip)")
    v, t = hf.get("vision_config") or {}, hf.get("text_config") or {}
    if v.get("num_channels", 3) != 3:
        raise ConfigError("HF vision_config.num_channels must be 3")
    vision = {
        **_tower(v, "vision_config"),
        "image_size": v.get("image_size", 224),
        "patch_size": v.get("patch_size", 32),
    }
    text = {**_tower(t, "text_config"), "context_length": t.get("max_position_embeddings", 77)}
    if kind == "clip":
        eps = 1e-5
        vision.update(stem="patch", patch_bias=False, pool="cls", ln_pre=True, proj="linear")
        text.update(causal=True, pool="eot", proj_bias=False)
        embed_dim = hf.get("projection_dim", 512)
        extra = {"init_logit_scale": float(torch.tensor(hf.get("logit_scale_init_value", 2.6592)).exp())}
    else:
        eps = 1e-6
        if not v.get("vision_use_head", True):
            raise ConfigError("HF SigLIP vision_config.vision_use_head=false is not supported")
        embed_dim = t.get("projection_size") or text["width"]
        if embed_dim != vision["width"]:
            raise ConfigError(
                f"HF SigLIP text projection_size {embed_dim} differs from the vision width {vision['width']}"
            )
        vision.update(stem="patch", patch_bias=True, pool="map", ln_pre=False, proj="none")
        text.update(causal=False, pool="end", mask_padding=False, proj_bias=True)
        extra = {"init_logit_scale": 10.0, "init_logit_bias": -10.0}
    vision["norm_eps"] = float(v.get("layer_norm_eps", eps))
    text["norm_eps"] = float(t.get("layer_norm_eps", eps))
    return kind, {"embed_dim": embed_dim, "vision": vision, "text": text, **extra}


def hf_config(model: dict[str, Any], vocab_size: int, kind: str, eos_id: int, pad_id: int) -> dict[str, Any]:
    """A HF ``config.json`` for a vislang ``model`` section of the given kind (inverse of
    :func:`model_config_from_hf`); raises for options the HF class lacks."""
    v, t = model["vision"], model["text"]
    clip = kind == "clip"
    need = {
        "model.vision.stem": (v["stem"], "patch"),
        "model.vision.patch_bias": (v["patch_bias"], not clip),
        "model.vision.pool": (v["pool"], "cls" if clip else "map"),
        "model.vision.ln_pre": (v["ln_pre"], clip),
        "model.vision.proj": (v["proj"], "linear" if clip else "none"),
        "model.vision.pos_embed": (v["pos_embed"], "learned"),
        "model.text.pretrained": (t["pretrained"], None),
        "model.text.causal": (t["causal"], clip),
        "model.text.pool": (t["pool"], "eot" if clip else "end"),
        "model.text.proj": (t["proj"], "linear"),
        "model.text.proj_bias": (t["proj_bias"], not clip),
    }
    if not clip:
        need["model.text.mask_padding"] = (t["mask_padding"], False)
    for key, (value, wanted) in need.items():
        if value != wanted:
            raise ConfigError(f"{key}={value!r} has no HF {kind} equivalent (needs {wanted!r})")

    def tower(c: dict[str, Any]) -> dict[str, Any]:
        return {
            "hidden_size": c["width"],
            "intermediate_size": int(c["width"] * c["mlp_ratio"]),
            "num_hidden_layers": c["depth"],
            "num_attention_heads": c["heads"],
            "hidden_act": _ACT_TO_HF[c["act"]],
            "layer_norm_eps": c["norm_eps"],
        }

    vision_config = {**tower(v), "image_size": v["image_size"], "patch_size": v["patch_size"], "num_channels": 3}
    text_config = {
        **tower(t),
        "vocab_size": vocab_size,
        "max_position_embeddings": t["context_length"],
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
    }
    if clip:
        text_config["projection_dim"] = vision_config["projection_dim"] = model["embed_dim"]
        return {
            "model_type": "clip",
            "architectures": ["CLIPModel"],
            "projection_dim": model["embed_dim"],
            "logit_scale_init_value": float(torch.tensor(model["init_logit_scale"]).log()),
            "text_config": {**text_config, "model_type": "clip_text_model"},
            "vision_config": {**vision_config, "model_type": "clip_vision_model"},
        }
    text_config["projection_size"] = model["embed_dim"]
    return {
        "model_type": "siglip",
        "architectures": ["SiglipModel"],
        "text_config": {**text_config, "model_type": "siglip_text_model"},
        "vision_config": {**vision_config, "model_type": "siglip_vision_model", "vision_use_head": True},
    }


# -- state dicts ---------------------------------------------------------------------------------

# An encoder layer, the same in both towers: (HF name, vislang name[, transform]).
_BLOCK: list[Entry] = [
    ("layer_norm1.{*}", "ln_1.{*}"),
    (("self_attn.q_proj.{*}", "self_attn.k_proj.{*}", "self_attn.v_proj.{*}"), "attn.in_proj.{*}", fused_rows(3)),
    ("self_attn.out_proj.{*}", "attn.out_proj.{*}"),
    ("layer_norm2.{*}", "ln_2.{*}"),
    ("mlp.fc1.{*}", "mlp.0.{*}"),
    ("mlp.fc2.{*}", "mlp.2.{*}"),
]
# SigLIP's attention-pooling head -> vislang's AttentionPool.
_HEAD: list[Entry] = [
    ("probe", "query"),
    ("attention.in_proj_weight", "attn.in_proj.weight"),
    ("attention.in_proj_bias", "attn.in_proj.bias"),
    ("attention.out_proj.{*}", "attn.out_proj.{*}"),
    ("layernorm.{*}", "ln.{*}"),
    ("mlp.fc1.{*}", "mlp.0.{*}"),
    ("mlp.fc2.{*}", "mlp.2.{*}"),
]
_VISION: list[Entry] = [
    ("embeddings.class_embedding", "cls_token", CLS_TOKEN),
    ("embeddings.patch_embedding.{*}", "stem.{*}"),
    ("embeddings.position_embedding.weight", "pos_embed", BATCH_DIM),
    ("pre_layrnorm.{*}", "ln_pre.{*}"),  # sic: HF's name
    ("post_layernorm.{*}", "ln_post.{*}"),
    *under("head.", "attn_pool.", _HEAD),
    *under("encoder.layers.{i}.", "transformer.blocks.{i}.", _BLOCK),
]
_TEXT: list[Entry] = [
    ("embeddings.token_embedding.weight", "token_embed.weight"),
    ("embeddings.position_embedding.weight", "pos_embed", BATCH_DIM),
    ("final_layer_norm.{*}", "ln_final.{*}"),
    *under("encoder.layers.{i}.", "transformer.blocks.{i}.", _BLOCK),
]


def weight_map(kind: str) -> WeightMap:
    """The layout of a HF ``CLIPModel`` (kind "clip") or ``SiglipModel`` ("siglip"). They differ
    at the top: CLIP's text projection is ``text_projection`` and its logit scale a 0-d tensor,
    SigLIP's projection is the text model's biased ``head`` and its logit scale and bias have shape [1]."""
    siglip = kind == "siglip"
    logit = scalar((1,) if siglip else ())
    entries = [
        ("logit_scale", "logit_scale", logit),
        ("logit_bias", "logit_bias", logit),
        ("visual_projection.weight", "vision.proj.weight"),
        ("text_model.head.{*}" if siglip else "text_projection.{*}", "text.proj.{*}"),
        *under("vision_model.", "vision.", _VISION),
        *under("text_model.", "text.", _TEXT),
    ]
    return WeightMap(f"HF {kind}", entries, ignored=["{*}position_ids"])  # arange buffers


def state_from_hf(state: dict[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    """A HF CLIPModel / SiglipModel state dict -> the vislang ``TwoTower`` state dict."""
    return weight_map(kind).to_ours(state)


def state_to_hf(state: dict[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    """The inverse of :func:`state_from_hf`."""
    return weight_map(kind).to_peer(state)
