"""Checkpoint conversion between vislang and the formats pretrained CLIPs are published in.

``import_open_clip`` / ``import_hf`` write a vislang export directory (``model.safetensors``,
``config.json``, ``tokenizer.json``; see :mod:`vislang.export`) that ``vislang.load``, ``vislang
eval`` and ``vislang embed`` open; its config carries the model's preprocessing (mean/std, resize
mode, interpolation), so images are prepared as the peer prepares them. ``export_open_clip`` /
``export_hf`` write a vislang checkpoint in the peer's layout. Each peer's tensor layout is one
table in :mod:`vislang.convert.open_clip` / :mod:`vislang.convert.hf`, read both ways by
:mod:`vislang.convert.weight_map`; this module reads and writes files.
Nothing here unpickles code: ``.bin``/``.pt`` weights are read with ``weights_only=True``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import torch

from vislang.checkpoint import read_safetensors, read_torch_file, write_export
from vislang.checkpoint import save_safetensors as save_file  # a normal file's mode, not safetensors' 0600
from vislang.config import PRESETS
from vislang.convert import hf as hf_format
from vislang.convert import open_clip as oc_format
from vislang.errors import CheckpointError, ConfigError, first_line
from vislang.experiment import RunConfig, build_objective
from vislang.files import read_json
from vislang.restore import load_objective
from vislang.tokenizers import BPETokenizer

OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS = "open_clip_config.json", "open_clip_model.safetensors"
HF_CONFIG, HF_WEIGHTS = "config.json", "model.safetensors"


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file (``weights_only``: no code runs); a
    training checkpoint's ``state_dict`` is taken and DDP's ``module.`` prefixes dropped. Every
    broken file (missing, empty, truncated, another format, pickled objects) is one line."""
    path = Path(path)
    if path.suffix == ".safetensors":
        state: Any = read_safetensors(path, "weights file")
    else:
        state = read_torch_file(path, "weights file")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _checkpoint(model_cfg: dict, preprocess: dict, tokenizer: BPETokenizer, tokenizer_cfg: dict,
                state: dict[str, torch.Tensor], source: str) -> dict[str, Any]:  # fmt: skip
    """A converted model in the shape of a vislang checkpoint (config, tokenizer, objective
    state), after checking that the weights fit the architecture exactly."""
    model_cfg = {**model_cfg, "vision": {**model_cfg["vision"], "image_mean": preprocess["mean"],
                                         "image_std": preprocess["std"]}}  # fmt: skip
    raw = {
        "objective": {"kind": "siglip" if model_cfg.get("init_logit_bias") is not None else "clip"},
        "model": model_cfg,
        "tokenizer": tokenizer_cfg,
        "data": {"resize_mode": preprocess["resize_mode"], "interpolation": preprocess["interpolation"]},
    }
    try:
        cfg = RunConfig.model_validate(raw)
    except ValueError as error:
        raise ConfigError(f"{source}: the converted config is invalid: {first_line(error)}") from None
    with torch.device("meta"):  # shapes only: the loader builds and fills the real model
        objective = build_objective(cfg, tokenizer.vocab_size, tokenizer.pad_id)
    target = objective.model.state_dict()
    missing = sorted(set(target) - set(state))
    extra = sorted(set(state) - set(target))
    if missing or extra:
        raise CheckpointError(
            f"{source}: weights do not fit the architecture (missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for key, value in state.items():
        if value.shape != target[key].shape:
            raise CheckpointError(
                f"{source}: {key} has shape {tuple(value.shape)}, the architecture needs {tuple(target[key].shape)}"
            )
    return {
        "config": cfg.model_dump(mode="json"),
        "tokenizer": tokenizer.to_json(),
        "model": {f"model.{k}": v.float().contiguous() for k, v in state.items()},
    }


def peer_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """An OpenCLIP (``open_clip_config.json``) or Hugging Face CLIP/SigLIP directory read as a
    vislang checkpoint, so ``vislang.load`` opens it directly; None for any other path."""
    path = Path(path)
    if (path / OPEN_CLIP_CONFIG).is_file():
        return read_open_clip(path)
    if (path / HF_CONFIG).is_file() and _read_json(path / HF_CONFIG).get("model_type") in ("clip", "siglip"):
        return read_hf(path)
    return None


def _openai_tokenizer(path: str | Path | None, context_length: int) -> tuple[BPETokenizer, dict]:
    """OpenAI's BPE from the given merges file or the one an installed open_clip ships."""
    if path is None:
        # found without importing open_clip (which imports most of its model zoo)
        spec = importlib.util.find_spec("open_clip")
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                "give --tokenizer: OpenAI CLIP's merges file (bpe_simple_vocab_16e6.txt.gz); no open_clip is installed"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    return BPETokenizer.openai(path, context_length), {"kind": "openai", "path": str(path)}


def import_open_clip(
    weights: str | Path,
    out: str | Path,
    arch: str | None = None,
    arch_config: str | Path | None = None,
    tokenizer: str | Path | None = None,
) -> Path:
    """An OpenCLIP checkpoint -> a vislang export directory (see :func:`read_open_clip`)."""
    return write_export(read_open_clip(weights, arch, arch_config, tokenizer), out, str(weights))


def read_open_clip(
    weights: str | Path,
    arch: str | None = None,
    arch_config: str | Path | None = None,
    tokenizer: str | Path | None = None,
) -> dict[str, Any]:
    """An OpenCLIP checkpoint as a vislang checkpoint.

    The architecture comes from ``arch_config`` (an OpenCLIP model-config JSON), from the
    ``open_clip_config.json`` beside the weights, or from ``arch`` (a vislang preset named as in
    OpenCLIP, else the config an installed open_clip knows by that name).
    """
    weights = Path(weights)
    folder = weights if weights.is_dir() else weights.parent
    oc_cfg: dict[str, Any] = {}
    if arch_config is not None:
        oc_cfg = _read_json(arch_config)
    elif (folder / OPEN_CLIP_CONFIG).is_file():
        hub = _read_json(folder / OPEN_CLIP_CONFIG)
        if not isinstance(hub.get("model_cfg", {}), dict):
            raise ConfigError(f"{folder / OPEN_CLIP_CONFIG}: its model_cfg is not a JSON object")
        oc_cfg = {**hub.get("model_cfg", {}), "preprocess_cfg": hub.get("preprocess_cfg")}
    elif arch is None:
        raise ConfigError("name the architecture: --arch NAME or --arch-config FILE")
    where = arch_config if arch_config is not None else folder / OPEN_CLIP_CONFIG
    model_cfg = _peer_config(oc_format.model_config_from_open_clip, oc_cfg, where) if oc_cfg else _arch_config(arch)
    if weights.is_dir():
        found = [p for p in (folder / OPEN_CLIP_WEIGHTS, folder / "open_clip_pytorch_model.bin") if p.is_file()]
        if not found:
            raise CheckpointError(f"{folder}: no {OPEN_CLIP_WEIGHTS} or open_clip_pytorch_model.bin")
        weights = found[0]
    state = oc_format.state_from_open_clip(read_weights(weights))
    context = model_cfg["text"]["context_length"]
    hf_tokenizer = oc_cfg.get("text_cfg", {}).get("hf_tokenizer_name")
    if tokenizer is not None and Path(tokenizer).is_dir():
        tok, tok_cfg = BPETokenizer.pretrained(tokenizer, context), {"kind": "trained"}
    elif hf_tokenizer:
        raise ConfigError(
            f"the model uses the Hugging Face tokenizer {hf_tokenizer}: give --tokenizer DIR (its tokenizer.json)"
        )
    else:
        tok, tok_cfg = _openai_tokenizer(tokenizer, context)
    preprocess = _peer_config(oc_format.preprocess_from_open_clip, oc_cfg.get("preprocess_cfg"), where)
    return _checkpoint(model_cfg, preprocess, tok, tok_cfg, state, str(weights))


def _arch_config(arch: str) -> dict:
    if arch in PRESETS:
        return json.loads(json.dumps(PRESETS[arch]))  # a deep copy
    try:
        import open_clip
    except ImportError:
        raise ConfigError(f"unknown architecture {arch!r}: not a vislang preset; give --arch-config") from None
    oc_cfg = open_clip.get_model_config(arch)
    if oc_cfg is None:
        raise ConfigError(f"unknown architecture {arch!r}: neither a vislang preset nor an OpenCLIP model config")
    return oc_format.model_config_from_open_clip(oc_cfg)


def _read_json(path: str | Path) -> dict:
    data = read_json(path, "JSON file", ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a JSON object")
    return data


def _peer_config(read, raw: dict | None, path: str | Path):
    """``read(raw)`` (a peer's model config mapped to vislang's), where a config of the wrong
    shape is one line naming its file."""
    try:
        return read(raw)
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise ConfigError(f"{path}: not a model config this converter reads ({first_line(error)})") from None


def import_hf(directory: str | Path, out: str | Path, tokenizer: str | Path | None = None) -> Path:
    """A Hugging Face ``CLIPModel`` / ``SiglipModel`` directory -> a vislang export directory."""
    return write_export(read_hf(directory, tokenizer), out, str(directory))


def read_hf(directory: str | Path, tokenizer: str | Path | None = None) -> dict[str, Any]:
    """A Hugging Face ``CLIPModel`` / ``SiglipModel`` directory as a vislang checkpoint.

    Tokenizer: CLIP's BPE from ``merges.txt`` in the directory (or the merges file given), so
    token ids equal OpenAI's; SigLIP's from the directory's ``tokenizer.json``.
    """
    directory = Path(directory)
    kind, model_cfg = _peer_config(hf_format.model_config_from_hf, _read_json(directory / HF_CONFIG),
                                   directory / HF_CONFIG)  # fmt: skip
    state = hf_format.state_from_hf(read_weights(directory / HF_WEIGHTS), kind)
    context = model_cfg["text"]["context_length"]
    if kind == "clip":
        if tokenizer is not None and not Path(tokenizer).is_file():
            raise ConfigError(f"--tokenizer: OpenAI's merges file not found: {tokenizer}")
        merges = tokenizer if tokenizer is not None else directory / "merges.txt"
        tok, tok_cfg = _openai_tokenizer(merges if Path(merges).is_file() else None, context)
        preprocess = hf_format.CLIP_PREPROCESS
    else:
        tok = BPETokenizer.pretrained(tokenizer or directory, context)
        tok_cfg = {"kind": "trained"}  # the tokenizer itself travels in tokenizer.json
        preprocess = hf_format.SIGLIP_PREPROCESS
    return _checkpoint(model_cfg, preprocess, tok, tok_cfg, state, str(directory))


def _load_two_tower(source: str | Path):
    objective, tokenizer, cfg = load_objective(source)
    if not hasattr(objective.model, "encode_text") or not hasattr(objective.model, "vision"):
        raise ConfigError(f"{source}: only two-tower (CLIP/SigLIP) models convert")
    return objective.model, tokenizer, cfg


def _check_end_token(source, tokenizer: BPETokenizer, cfg: RunConfig, peer: str, pools_at: int | None) -> None:
    """Refuse a conversion whose peer would pool the text tower at another token than vislang's
    end-of-text token (``pools_at``: the id the peer's argmax pooling finds; None: it looks for
    the end token itself)."""
    t = cfg.model.text
    if t.causal and t.pool == "eot" and pools_at is not None and tokenizer.eot_id != pools_at:
        raise ConfigError(
            f"{source}: its tokenizer ends texts with token id {tokenizer.eot_id}, but {peer} would pool the text at "
            f"the highest id of each text, so the converted model would embed texts differently; train with "
            "tokenizer.kind: openai (OpenAI's vocabulary ends texts with its highest id) or share it as a vislang export"
        )


def export_open_clip(source: str | Path, out: str | Path) -> Path:
    """A vislang checkpoint or export -> ``open_clip_config.json`` + ``open_clip_model.safetensors``
    (OpenCLIP opens it with ``create_model('local-dir:OUT')``).

    OpenCLIP's text tower pools at the highest token id of each text (``argmax``), which is the
    end-of-text token only in OpenAI's vocabulary; a model whose end token is another id (a BPE
    trained per run) would embed texts differently there, so it is refused instead."""
    model, tokenizer, cfg = _load_two_tower(source)
    _check_end_token(source, tokenizer, cfg, "OpenCLIP", pools_at=tokenizer.vocab_size - 1)
    model_dump = cfg.model.model_dump(mode="json")
    oc_cfg = oc_format.open_clip_model_config(model_dump, tokenizer.vocab_size)
    state = oc_format.state_to_open_clip(model.state_dict(), oc_cfg.get("custom_text", False))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / OPEN_CLIP_WEIGHTS))
    preprocess = {
        "size": cfg.model.vision.image_size,
        "mean": list(cfg.model.vision.image_mean),
        "std": list(cfg.model.vision.image_std),
        "interpolation": cfg.data.interpolation,
        "resize_mode": cfg.data.resize_mode,
    }
    (out / OPEN_CLIP_CONFIG).write_text(
        json.dumps({"model_cfg": oc_cfg, "preprocess_cfg": preprocess}, indent=2) + "\n"
    )
    return out


def export_hf(source: str | Path, out: str | Path) -> Path:
    """A vislang checkpoint or export -> a HF ``CLIPModel`` (class-token pooling) or ``SiglipModel``
    (attention pooling) directory: ``config.json`` + ``model.safetensors``. As for OpenCLIP, a
    model whose text pooling HF would read differently is refused."""
    model, tokenizer, cfg = _load_two_tower(source)
    kind = "siglip" if cfg.model.vision.pool == "map" else "clip"
    # HF CLIP reads eos_token_id 2 as its legacy marker and then pools at the highest id (argmax)
    if kind == "clip":
        _check_end_token(
            source, tokenizer, cfg, "Hugging Face CLIP", tokenizer.vocab_size - 1 if tokenizer.eot_id == 2 else None
        )
    hf_cfg = hf_format.hf_config(cfg.model.model_dump(mode="json"), tokenizer.vocab_size, kind,
                                 tokenizer.eot_id, tokenizer.pad_id)  # fmt: skip
    state = hf_format.state_to_hf(model.state_dict(), kind)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / HF_WEIGHTS), metadata={"format": "pt"})
    (out / HF_CONFIG).write_text(json.dumps(hf_cfg, indent=2) + "\n")
    return out
