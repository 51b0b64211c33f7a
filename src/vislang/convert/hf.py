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

import re
from typing import Any

import torch

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
CLIP_PREPROCESS = {
    "mean": (0.48145466, 0.4578275, 0.40821073),
    "std": (0.26862954, 0.26130258, 0.27577711),
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}


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

_BLOCK = [
    ("layer_norm1.", "ln_1."),
    ("self_attn.out_proj.", "attn.out_proj."),
    ("layer_norm2.", "ln_2."),
    ("mlp.fc1.", "mlp.0."),
    ("mlp.fc2.", "mlp.2."),
]
_QKV = ("q_proj", "k_proj", "v_proj")


def state_from_hf(state: dict[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    """A HF CLIPModel / SiglipModel state dict -> the vislang ``TwoTower`` state dict."""
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue  # an arange buffer
        match = re.match(r"(text|vision)_model\.encoder\.layers\.(\d+)\.(.*)", key)
        if match:
            tower, index, inner = match.groups()
            prefix = f"{tower}.transformer.blocks.{index}."
            qkv = re.match(r"self_attn\.(q_proj|k_proj|v_proj)\.(weight|bias)", inner)
            if qkv:
                fused.setdefault(f"{prefix}attn.in_proj.{qkv.group(2)}", {})[qkv.group(1)] = value
                continue
            name = next((prefix + new + inner[len(old) :] for old, new in _BLOCK if inner.startswith(old)), None)
        else:
            name = _TOP_FROM_HF.get(key)
            if name is None and key.startswith("vision_model.head."):
                name = "vision.attn_pool." + _rename_head(key[len("vision_model.head.") :], True)
            if key == "vision_model.embeddings.class_embedding":
                value = value.reshape(1, 1, -1)
            elif key.endswith("embeddings.position_embedding.weight"):
                value = value.unsqueeze(0)
            elif key in ("logit_scale", "logit_bias"):
                value = value.reshape(())
        if name is None:
            raise ConfigError(f"unexpected HF {kind} weight {key!r}")
        out[name] = value.contiguous()
    for name, parts in fused.items():
        if set(parts) != set(_QKV):
            raise ConfigError(f"HF weights lack part of the attention projection {name}")
        out[name] = torch.cat([parts[p] for p in _QKV]).contiguous()
    return out


def state_to_hf(state: dict[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    """The inverse of :func:`state_from_hf`."""
    # CLIP's text projection is "text_projection", SigLIP's the text model's "head"
    text_head = "text_model.head." if kind == "siglip" else "text_projection."
    top = {v: k for k, v in _TOP_FROM_HF.items() if not k.startswith(("text_model.head.", "text_projection."))}
    top.update({"text.proj.weight": text_head + "weight", "text.proj.bias": text_head + "bias"})
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = re.match(r"(text|vision)\.transformer\.blocks\.(\d+)\.(.*)", key)
        if match:
            tower, index, inner = match.groups()
            prefix = f"{tower}_model.encoder.layers.{index}."
            qkv = re.match(r"attn\.in_proj\.(weight|bias)", inner)
            if qkv:
                for part, chunk in zip(_QKV, value.chunk(3)):
                    out[f"{prefix}self_attn.{part}.{qkv.group(1)}"] = chunk.contiguous()
                continue
            name = next((prefix + old + inner[len(new) :] for old, new in _BLOCK if inner.startswith(new)), None)
        else:
            name = top.get(key)
            if name is None and key.startswith("vision.attn_pool."):
                name = "vision_model.head." + _rename_head(key[len("vision.attn_pool.") :], False)
            if key == "vision.cls_token":
                value = value.reshape(-1)
            elif key in ("vision.pos_embed", "text.pos_embed"):
                value = value.squeeze(0)
            elif key in ("logit_scale", "logit_bias") and kind == "siglip":
                value = value.reshape(1)
        if name is None:
            raise ConfigError(f"the vislang weight {key!r} has no HF {kind} equivalent")
        out[name] = value.contiguous()
    return out


_TOP_FROM_HF = {
    "logit_scale": "logit_scale",
    "logit_bias": "logit_bias",
    "visual_projection.weight": "vision.proj.weight",
    "text_projection.weight": "text.proj.weight",
    "vision_model.embeddings.class_embedding": "vision.cls_token",
    "vision_model.embeddings.patch_embedding.weight": "vision.stem.weight",
    "vision_model.embeddings.patch_embedding.bias": "vision.stem.bias",
    "vision_model.embeddings.position_embedding.weight": "vision.pos_embed",
    "vision_model.pre_layrnorm.weight": "vision.ln_pre.weight",
    "vision_model.pre_layrnorm.bias": "vision.ln_pre.bias",
    "vision_model.post_layernorm.weight": "vision.ln_post.weight",
    "vision_model.post_layernorm.bias": "vision.ln_post.bias",
    "text_model.embeddings.token_embedding.weight": "text.token_embed.weight",
    "text_model.embeddings.position_embedding.weight": "text.pos_embed",
    "text_model.final_layer_norm.weight": "text.ln_final.weight",
    "text_model.final_layer_norm.bias": "text.ln_final.bias",
    "text_model.head.weight": "text.proj.weight",
    "text_model.head.bias": "text.proj.bias",
}
# SigLIP's attention-pooling head: (HF name, vislang AttentionPool name).
_HEAD = [
    ("probe", "query"),
    ("attention.in_proj_weight", "attn.in_proj.weight"),
    ("attention.in_proj_bias", "attn.in_proj.bias"),
    ("attention.out_proj.", "attn.out_proj."),
    ("layernorm.", "ln."),
    ("mlp.fc1.", "mlp.0."),
    ("mlp.fc2.", "mlp.2."),
]


def _rename_head(name: str, from_hf: bool) -> str:
    for hf, ours in _HEAD:
        old, new = (hf, ours) if from_hf else (ours, hf)
        if name.startswith(old):
            return new + name[len(old) :]
    raise ConfigError(f"unexpected attention-pooling weight {name!r}")
