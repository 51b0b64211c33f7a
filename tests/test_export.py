"""``vislang export`` (safetensors + config + tokenizer, opened by vislang.load like a checkpoint)
and ``vislang embed`` (images or texts to .npy / .parquet with ids), through the CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

import vislang
from vislang.experiment import build_config


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vislang.cli", *args], capture_output=True, text=True, timeout=300)


def test_export_opens_like_the_checkpoint(tiny_run, tmp_path):
    result = cli("export", str(tiny_run), "--out", str(tmp_path / "exported"))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "exported").iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    model, tokenizer, preprocess = vislang.load(tiny_run)
    exported, exported_tokenizer, exported_preprocess = vislang.load(tmp_path / "exported")
    image = Image.new("RGB", (40, 30), (200, 20, 20))
    texts = ["a red circle", "a blue square above a green star"]
    with torch.no_grad():
        assert torch.equal(
            model.encode_image(preprocess(image)[None]), exported.encode_image(exported_preprocess(image)[None])
        )
        assert torch.equal(model.encode_text(tokenizer(texts)), exported.encode_text(exported_tokenizer(texts)))


def test_embed_images_and_texts(tiny_run, tmp_path):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    colours = [(200, 20, 20), (20, 200, 20), (20, 20, 200)]
    for i, colour in enumerate(colours):
        Image.new("RGB", (32, 32), colour).save(folder / ("sub" if i == 2 else "") / f"{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    result = cli(
        "embed", str(tiny_run), "--images", str(folder), "--out", str(tmp_path / "img.npy"), "--batch-size", "2"
    )
    assert result.returncode == 0, result.stderr
    assert "skipped 1 unreadable" in result.stderr
    embeddings = np.load(tmp_path / "img.npy")
    ids = (tmp_path / "img.ids.txt").read_text().split()
    assert ids == ["0.png", "1.png", "sub/2.png"] and embeddings.shape == (3, 32)
    model, _, preprocess = vislang.load(tiny_run)
    with torch.no_grad():
        expected = model.encode_image(preprocess([Image.new("RGB", (32, 32), c) for c in colours])).numpy()
    np.testing.assert_allclose(embeddings, expected, atol=1e-6)

    (tmp_path / "texts.txt").write_text("a red circle\na small blue square left of a star\n")
    result = cli("embed", str(tiny_run), "--texts", str(tmp_path / "texts.txt"), "--out", str(tmp_path / "t.parquet"))
    assert result.returncode == 0, result.stderr
    table = pq.read_table(tmp_path / "t.parquet")
    assert table.column("id").to_pylist() == ["0", "1"]
    assert np.allclose(np.linalg.norm(np.array(table.column("embedding").to_pylist()), axis=1), 1, atol=1e-5)


def test_embed_and_export_errors_are_one_line(tiny_run, tmp_path):
    for args in (
        ("embed", str(tiny_run), "--images", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.npy")),
        ("embed", str(tiny_run), "--texts", str(tmp_path / "none.txt"), "--out", str(tmp_path / "x.npy")),
        ("export", str(tmp_path / "no_run"), "--out", str(tmp_path / "e")),
    ):
        result = cli(*args)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_run_saved_in_the_earlier_config_layout_still_opens(tmp_path, tiny_overrides):
    """Exports and checkpoints written before objectives owned their sections hold ``objective:
    NAME``, ``loss``, ``model.decoder`` and eval switches; they are upgraded when read."""
    import json

    from conftest import export_untrained
    from vislang.api import load_objective

    cfg = build_config({}, tiny_overrides + ["objective=cappa", "objective.parallel_prob=0.5"])
    out = export_untrained(cfg, ["a red circle", "a blue square"] * 20, tmp_path / "new")
    saved = json.loads((tmp_path / "new" / "config.json").read_text())
    old = {k: v for k, v in saved.items() if k not in ("objective", "eval")}
    old["objective"] = "cappa"
    old["loss"] = {"label_smoothing": 0.0, "parallel_prob": 0.5, "caption_weight": 2.0, "siglip_chunk": 0}
    old["model"] = {**saved["model"], "decoder": {"depth": 2, "n_queries": 256}}
    old["eval"] = {"zeroshot": True, "retrieval": False, "compositional": True, "n_classify": 40, "n_probe": 20}
    (tmp_path / "new" / "config.json").write_text(json.dumps(old))
    objective, _, loaded = load_objective(out)
    assert loaded.objective.kind == "cappa" and loaded.objective.parallel_prob == 0.5
    assert [t.type for t in loaded.eval.tasks] == ["zeroshot", "compositional"]
    assert loaded.eval.tasks[0].n == 40 and objective.parallel_prob == 0.5


def test_embed_texts_skips_blank_lines(tmp_path, tiny_config, capsys):
    from conftest import export_untrained
    from vislang.cli import main

    out = export_untrained(tiny_config, ["a red circle", "a blue square"] * 20, tmp_path / "clip")
    (tmp_path / "texts.txt").write_text("a red circle\n\n   \na blue square\n\n")
    args = ["embed", out, "--texts", str(tmp_path / "texts.txt"), "--out", str(tmp_path / "t.npy"), "--quiet"]
    assert main(args) == 0
    assert capsys.readouterr().err.strip().splitlines() == [f"skipped 3 blank lines of {tmp_path / 'texts.txt'}"]
    assert (tmp_path / "t.ids.txt").read_text().split() == ["0", "3"]
    model, tokenizer, _ = vislang.load(out)
    with torch.no_grad():
        expected = model.encode_text(tokenizer(["a red circle", "a blue square"])).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "t.npy"), expected, atol=1e-6)
    (tmp_path / "blank.txt").write_text("\n  \n")
    assert main([*args[:3], str(tmp_path / "blank.txt"), *args[4:]]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_embed_with_a_model_that_cannot_embed_is_one_line(tmp_path, tiny_overrides, capsys):
    from conftest import export_untrained
    from vislang.cli import main

    cap = export_untrained(build_config({}, tiny_overrides + ["objective=cap"]), ["a red circle"] * 20, tmp_path / "c")
    (tmp_path / "texts.txt").write_text("a red circle\n")
    Image.new("RGB", (32, 32)).save(tmp_path / "0.png")
    for what in (["--texts", str(tmp_path / "texts.txt")], ["--images", str(tmp_path)]):
        assert main(["embed", cap, *what, "--out", str(tmp_path / "x.npy"), "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "cap model has no encode_" in err[0], err


def test_exported_and_converted_files_have_a_normal_files_mode(tmp_path, tiny_config):
    """Every file of an export and of a conversion (both ways) gets ``0o666 & ~umask``, as a newly
    created file does (safetensors alone writes 0600)."""
    import os
    from pathlib import Path

    from conftest import export_untrained
    from test_faults_files import tiny_hf_clip
    from vislang import convert

    open_clip = pytest.importorskip("open_clip")
    hf = tiny_hf_clip(tmp_path / "hf")
    previous = os.umask(0o027)
    try:
        export = export_untrained(tiny_config, ["a red circle", "a blue square"] * 20, tmp_path / "export")
        imported = convert.import_hf(hf, tmp_path / "imported", tokenizer=open_clip.tokenizer.default_bpe())
        folders = [export, imported, convert.export_hf(imported, tmp_path / "back")]
        folders.append(convert.export_open_clip(imported, tmp_path / "oc"))
    finally:
        os.umask(previous)
    modes = {str(p): oct(p.stat().st_mode & 0o777) for folder in folders for p in Path(folder).iterdir()}
    assert len(modes) == 10 and modes == dict.fromkeys(modes, oct(0o640))
