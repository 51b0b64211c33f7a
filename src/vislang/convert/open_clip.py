"""OpenCLIP checkpoints <-> vislang two-tower models (ViT-based CLIP and SigLIP-style towers).

OpenCLIP describes an architecture by a model config (``embed_dim``, ``quick_gelu``,
``vision_cfg``, ``text_cfg``; the JSON files of its ``model_configs`` folder or the
``model_cfg`` of an ``open_clip_config.json``) and keeps the text tower's weights at the top
level of the state dict (``CLIP``) or under ``text.`` (``CustomTextCLIP``, ``custom_text:
true``). Its ViT always has a class token whose position is the first row of
``positional_embedding``; its projections are matrices applied as ``x @ proj``.

Fields of an OpenCLIP config this module cannot represent exactly (ResNet towers, Hugging Face
text towers, layer scale, attentional poolers, ...) stop the conversion with an error that
names them, rather than loading something that computes a different function.
"""

from __future__ import annotations

from typing import Any

import torch

from vislang.convert.constants import OPENAI_PREPROCESS
from vislang.convert.weight_map import BATCH_DIM, CLS_TOKEN, TRANSPOSE, Entry, WeightMap, scalar, under
from vislang.errors import ConfigError

# OpenCLIP's defaults for the preprocessing of a model whose config does not say otherwise.
DEFAULT_PREPROCESS = OPENAI_PREPROCESS

# Values of OpenCLIP config fields that vislang reproduces (any other value is refused).
_VISION_DEFAULTS: dict[str, Any] = {
    "head_width": 64,
    "mlp_ratio": 4.0,
    "ls_init_value": None,
    "patch_dropout": 0.0,
    "attentional_pool": False,
    "no_ln_pre": False,
    "pos_embed_type": "learnable",
    "final_ln_after_pool": False,
    "pool_type": "tok",
    "output_tokens": False,
    "act_kwargs": None,
    "norm_kwargs": None,
}
_TEXT_DEFAULTS: dict[str, Any] = {
    "context_length": 77,
    "vocab_size": 49408,
    "width": 512,
    "heads": 8,
    "layers": 12,
    "mlp_ratio": 4.0,
    "ls_init_value": None,
    "embed_cls": False,
    "pad_id": 0,
    "no_causal_mask": False,
    "final_ln_after_pool": False,
    "pool_type": "argmax",
    "proj_bias": False,
    "proj_type": "linear",
    "output_tokens": False,
    "act_kwargs": None,
    "norm_kwargs": None,
}
# Fields that only name resources or do not change the function computed.
_IGNORED = {"hf_tokenizer_name", "tokenizer_kwargs", "tokenizer_mode", "output_dim", "timm_model_pretrained"}


def _unsupported(section: str, cfg: dict[str, Any], known: dict[str, Any], handled: set[str]) -> None:
    for key, value in cfg.items():
        if key in handled or key in _IGNORED:
            continue
        if key not in known:
            raise ConfigError(f"OpenCLIP {section}.{key} is not supported by the converter")
        if value != known[key]:
            raise ConfigError(f"OpenCLIP {section}.{key}={value!r} is not supported (only {known[key]!r})")


def _eps(cfg: dict[str, Any]) -> float:
    return float((cfg.get("norm_kwargs") or {}).get("eps", 1e-5))


def model_config_from_open_clip(oc: dict[str, Any]) -> dict[str, Any]:
    """vislang's ``model`` config section for an OpenCLIP model config."""
    v, t = dict(oc.get("vision_cfg", {})), dict(oc.get("text_cfg", {}))
    for key in oc:
        if key not in ("embed_dim", "quick_gelu", "vision_cfg", "text_cfg", "custom_text", "init_logit_bias",
                       "init_logit_scale", "cast_dtype", "preprocess_cfg"):  # fmt: skip
            raise ConfigError(f"OpenCLIP model config field {key!r} is not supported by the converter")
    if "hf_model_name" in t or not isinstance(v.get("layers", 12), int):
        raise ConfigError("OpenCLIP's ResNet image towers and HF text towers do not convert (ViT and timm towers do)")
    act = "quick_gelu" if oc.get("quick_gelu") else "gelu"
    vision_eps, text_eps = _eps(v), _eps(t)
    v.pop("norm_kwargs", None), t.pop("norm_kwargs", None)
    image_size = v.get("image_size", 224)
    if isinstance(image_size, (list, tuple)):
        if len(set(image_size)) != 1:
            raise ConfigError(f"OpenCLIP vision_cfg.image_size={image_size} is not square")
        image_size = image_size[0]
    width = v.get("width", 768)
    if "timm_model_name" in v:
        vision = _timm_vision(v, image_size)
    else:
        _unsupported("vision_cfg", v, _VISION_DEFAULTS, {"image_size", "layers", "width", "patch_size", "head_width"})
        vision = {
            "image_size": image_size,
            "patch_size": v.get("patch_size", 16),
            "width": width,
            "depth": v.get("layers", 12),
            "heads": width // v.get("head_width", 64),
            "mlp_ratio": v.get("mlp_ratio", 4.0),
            "stem": "patch",
            "patch_bias": False,
            "pool": "cls",
            "act": act,
            "norm_eps": vision_eps,
        }
    _unsupported("text_cfg", t, _TEXT_DEFAULTS,
                 {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "no_causal_mask",
                  "pool_type", "proj_bias"})  # fmt: skip
    causal = not t.get("no_causal_mask", False)
    pool = t.get("pool_type", "argmax")
    if pool not in ("argmax", "last"):
        raise ConfigError(f"OpenCLIP text_cfg.pool_type={pool!r} is not supported (argmax or last)")
    text_width = t.get("width", 512)
    text = {
        "context_length": t.get("context_length", 77),
        "width": text_width,
        "depth": t.get("layers", 12),
        "heads": t.get("heads", 8),
        "mlp_ratio": t.get("mlp_ratio", 4.0),
        "causal": causal,
        # argmax: the end-of-text token (the highest id of OpenAI's vocabulary); last: the final
        # position, with the padding attended to when there is no causal mask.
        "pool": "eot" if pool == "argmax" else "end",
        "mask_padding": False,
        "proj_bias": t.get("proj_bias", False),
        "act": act,
        "norm_eps": text_eps,
    }
    model: dict[str, Any] = {"embed_dim": oc.get("embed_dim", 512), "vision": vision, "text": text}
    if oc.get("init_logit_bias") is not None:
        model["init_logit_bias"] = float(oc["init_logit_bias"])
    return model


_TIMM_POOL = {"avg": "mean", "token": "cls", "map": "map"}
_TIMM_DEFAULTS: dict[str, Any] = {"timm_pool": "avg", "timm_proj": "linear", "timm_proj_bias": False,
                                  "timm_drop": 0.0, "timm_drop_path": None, "patch_dropout": 0.0}  # fmt: skip


def _timm_vision(v: dict[str, Any], image_size: int) -> dict[str, Any]:
    """vislang's timm tower for an OpenCLIP ``TimmModel`` (trunk without classifier, timm's pooling,
    then a linear projection or none)."""
    _unsupported("vision_cfg", v, _TIMM_DEFAULTS, {"timm_model_name", "image_size", "timm_pool", "timm_proj",
                                                   "timm_drop", "timm_drop_path", "patch_dropout"})  # fmt: skip
    pool, proj = v.get("timm_pool", "avg"), v.get("timm_proj", "linear")
    if pool not in _TIMM_POOL:
        raise ConfigError(f"OpenCLIP vision_cfg.timm_pool={pool!r} is not supported ({', '.join(_TIMM_POOL)})")
    if proj not in ("linear", "none"):
        raise ConfigError(f"OpenCLIP vision_cfg.timm_proj={proj!r} is not supported (linear or none)")
    kwargs = {} if v.get("timm_drop_path") is None else {"drop_path_rate": v["timm_drop_path"]}
    return {
        "kind": "timm",
        "timm_model": v["timm_model_name"],
        "timm_kwargs": kwargs,
        "image_size": image_size,
        "pool": _TIMM_POOL[pool],
        "proj": proj,
        "mask_ratio": v.get("patch_dropout", 0.0),
    }


def preprocess_from_open_clip(oc_preprocess: dict[str, Any] | None) -> dict[str, Any]:
    """OpenCLIP's preprocessing settings (``preprocess_cfg``) with its defaults filled in."""
    out = dict(DEFAULT_PREPROCESS)
    for key, value in (oc_preprocess or {}).items():
        if key in out:
            out[key] = tuple(value) if isinstance(value, list) else value
    if out["interpolation"] not in ("bicubic", "bilinear"):
        raise ConfigError(f"OpenCLIP preprocess interpolation {out['interpolation']!r} is not supported")
    if out["resize_mode"] not in ("shortest", "longest", "squash"):
        raise ConfigError(f"OpenCLIP preprocess resize_mode {out['resize_mode']!r} is not supported")
    return out


def open_clip_model_config(model: dict[str, Any], vocab_size: int) -> dict[str, Any]:
    """The OpenCLIP model config of a vislang ``model`` section (the inverse of
    :func:`model_config_from_open_clip`); raises for vislang options OpenCLIP lacks."""
    v, t = model["vision"], model["text"]
    if v["kind"] == "timm":
        return _open_clip_timm_config(model, vocab_size)
    wanted = {
        "model.vision.stem": (v["stem"], "patch"),
        "model.vision.patch_bias": (v["patch_bias"], False),
        "model.vision.pool": (v["pool"], "cls"),
        "model.vision.proj": (v["proj"], "linear"),
        "model.vision.ln_pre": (v["ln_pre"], True),
        "model.vision.pos_embed": (v["pos_embed"], "learned"),
        "model.text.pretrained": (t["pretrained"], None),
        "model.text.proj": (t["proj"], "linear"),
    }
    for key, (value, need) in wanted.items():
        if value != need:
            raise ConfigError(f"{key}={value!r} has no OpenCLIP equivalent (needs {need!r})")
    _check_act(v["act"], t["act"])
    out = {"embed_dim": model["embed_dim"], "vision_cfg": _vit_cfg(v), "text_cfg": _text_cfg(t, vocab_size)}
    return _finish(out, model)


def _check_act(vision_act: str, text_act: str) -> None:
    if vision_act != text_act or vision_act not in ("gelu", "quick_gelu"):
        raise ConfigError(
            f"OpenCLIP needs one activation, gelu or quick_gelu, in both towers (got {vision_act}, {text_act})"
        )


def _vit_cfg(v: dict[str, Any]) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "image_size": v["image_size"],
        "layers": v["depth"],
        "width": v["width"],
        "head_width": v["width"] // v["heads"],
        "mlp_ratio": v["mlp_ratio"],
        "patch_size": v["patch_size"],
    }
    if v["norm_eps"] != 1e-5:
        cfg["norm_kwargs"] = {"eps": v["norm_eps"]}
    return cfg


def _text_cfg(t: dict[str, Any], vocab_size: int) -> dict[str, Any]:
    causal, pool = t["causal"], t["pool"]
    if pool == "eot" and causal:
        text_pool = "argmax"
    elif pool == "end" and not t["mask_padding"]:
        text_pool = "last"
    else:
        raise ConfigError(f"model.text.pool={pool!r} (causal={causal}) has no OpenCLIP equivalent (eot or end)")
    cfg: dict[str, Any] = {
        "context_length": t["context_length"],
        "vocab_size": vocab_size,
        "width": t["width"],
        "heads": t["heads"],
        "layers": t["depth"],
        "mlp_ratio": t["mlp_ratio"],
    }
    if text_pool != "argmax":
        cfg.update(no_causal_mask=not causal, pool_type=text_pool)
    if t["proj_bias"]:
        cfg["proj_bias"] = True
    if t["norm_eps"] != 1e-5:
        cfg["norm_kwargs"] = {"eps": t["norm_eps"]}
    return cfg


def _finish(out: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    """Model-wide fields: QuickGELU, the logit bias, and CustomTextCLIP when the text tower needs it."""
    if model["text"]["act"] == "quick_gelu":
        out["quick_gelu"] = True
    if model.get("init_logit_bias") is not None:
        out["init_logit_bias"] = model["init_logit_bias"]
    text = out["text_cfg"]
    if text.get("pool_type", "argmax") != "argmax" or text.get("proj_bias") or "timm_model_name" in out["vision_cfg"]:
        out["custom_text"] = True  # OpenCLIP builds these text options in CustomTextCLIP only
    return out


def _open_clip_timm_config(model: dict[str, Any], vocab_size: int) -> dict[str, Any]:
    v, t = model["vision"], model["text"]
    if set(v["timm_kwargs"]) - {"drop_path_rate"}:
        raise ConfigError(f"model.vision.timm_kwargs {v['timm_kwargs']} have no OpenCLIP equivalent (drop_path_rate)")
    if t["pretrained"] is not None or t["proj"] != "linear" or t["act"] == "gelu_tanh":
        raise ConfigError("the text tower has no OpenCLIP equivalent (a vislang text transformer with gelu)")
    pool = {ours: theirs for theirs, ours in _TIMM_POOL.items()}[v["pool"]]
    vision_cfg: dict[str, Any] = {
        "timm_model_name": v["timm_model"],
        "timm_model_pretrained": False,
        "timm_pool": pool,
        "timm_proj": v["proj"],
        "image_size": v["image_size"],
    }
    if "drop_path_rate" in v["timm_kwargs"]:
        vision_cfg["timm_drop_path"] = v["timm_kwargs"]["drop_path_rate"]
    if v["mask_ratio"]:
        vision_cfg["patch_dropout"] = v["mask_ratio"]
    out = {"embed_dim": model["embed_dim"], "vision_cfg": vision_cfg, "text_cfg": _text_cfg(t, vocab_size)}
    return _finish(out, model)


# -- state dicts ---------------------------------------------------------------------------------

# A residual block, the same in both towers: (OpenCLIP name, vislang name).
_BLOCK: list[Entry] = [
    ("ln_1.{*}", "ln_1.{*}"),
    ("attn.in_proj_weight", "attn.in_proj.weight"),
    ("attn.in_proj_bias", "attn.in_proj.bias"),
    ("attn.out_proj.{*}", "attn.out_proj.{*}"),
    ("ln_2.{*}", "ln_2.{*}"),
    ("mlp.c_fc.{*}", "mlp.0.{*}"),
    ("mlp.c_proj.{*}", "mlp.2.{*}"),
]
_VIT: list[Entry] = [
    ("conv1.{*}", "stem.{*}"),
    ("class_embedding", "cls_token", CLS_TOKEN),
    ("positional_embedding", "pos_embed", BATCH_DIM),
    ("proj", "proj.weight", TRANSPOSE),
    ("ln_pre.{*}", "ln_pre.{*}"),
    ("ln_post.{*}", "ln_post.{*}"),
    *under("transformer.resblocks.{i}.", "transformer.blocks.{i}.", _BLOCK),
]
# A TimmModel: the timm trunk under its own names, then OpenCLIP's linear head.
_TIMM: list[Entry] = [("trunk.{*}", "trunk.{*}"), ("head.proj.weight", "proj.weight")]
_TEXT: list[Entry] = [
    ("token_embedding.weight", "token_embed.weight"),
    ("positional_embedding", "pos_embed", BATCH_DIM),
    ("ln_final.{*}", "ln_final.{*}"),
    *under("transformer.resblocks.{i}.", "transformer.blocks.{i}.", _BLOCK),
]


def weight_map(custom_text: bool, timm: bool, text_linear: bool) -> WeightMap:
    """OpenCLIP's layout of one model: ``custom_text`` puts the text tower under ``text.``
    (CustomTextCLIP), ``timm`` gives the image tower as a TimmModel, ``text_linear`` stores the
    text projection as a Linear with bias rather than a bare matrix."""
    text_prefix = "text." if custom_text else ""
    if text_linear:
        text_proj: list[Entry] = [("text_projection.{*}", "proj.{*}")]
    else:
        text_proj = [("text_projection", "proj.weight", TRANSPOSE)]
    entries = [
        ("logit_scale", "logit_scale", scalar(())),
        ("logit_bias", "logit_bias", scalar(())),
        *under("visual.", "vision.", _TIMM if timm else _VIT),
        *under(text_prefix, "text.", [*_TEXT, *text_proj]),
    ]
    return WeightMap("OpenCLIP", entries, ignored=[text_prefix + "attn_mask"])  # the causal mask, rebuilt


def state_from_open_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An OpenCLIP CLIP / CustomTextCLIP state dict -> the vislang ``TwoTower`` state dict (same
    tensors, renamed and, for the bare projection matrices, transposed)."""
    custom_text = any(k.startswith("text.") for k in state)
    text_prefix = "text." if custom_text else ""
    layout = weight_map(custom_text, any(k.startswith("visual.trunk.") for k in state),
                        f"{text_prefix}text_projection.weight" in state)  # fmt: skip
    return layout.to_ours(state)


def state_to_open_clip(state: dict[str, torch.Tensor], custom_text: bool) -> dict[str, torch.Tensor]:
    """The inverse of :func:`state_from_open_clip` (``custom_text``: text weights under ``text.``)."""
    layout = weight_map(custom_text, any(k.startswith("vision.trunk.") for k in state), "text.proj.bias" in state)
    return layout.to_peer(state)
