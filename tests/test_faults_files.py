"""The corrupt-file matrix: every command that reads a checkpoint, export, weights file, tokenizer,
config.json or image, given that file empty, truncated, as random bytes, in another format or as
an unsafe pickle, exits 2 with exactly one stderr line naming the file and no traceback. A broken
image among good ones is skipped and counted, and the good ones' results are still written.
Commands run in-process on tiny untrained models; each test fails listing the cells that broke.
"""

from __future__ import annotations

import collections
import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import vislang
from conftest import TINY, export_untrained
from vislang import convert
from vislang.checkpoint import read_export
from vislang.cli import main
from vislang.errors import VislangError
from vislang.experiment import build_config, to_yaml
from vislang.tokenizers import BPETokenizer

TEXTS = ["a red circle", "a blue square above a green star", "two small yellow triangles"] * 10
KINDS = ("empty", "truncated", "random", "wrong_format", "unsafe_pickle")
RANDOM = np.random.default_rng(0).bytes(4096)


class Exploit:
    """Unpickling this would run ``print``: every reader must refuse it."""

    def __reduce__(self):
        return (print, ("pwned",))


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


UNSAFE = _torch_bytes({"model": {}, "config": {}, "tokenizer": "", "x": Exploit()})
# What each kind of corruption writes in place of a file that holds ``good``; ``wrong`` is a
# file of another format for that role (JSON text for a torch file, a torch file for safetensors).
WRONG = {
    "torch": json.dumps({"model": "not a checkpoint"}).encode(),
    "safetensors": _torch_bytes({"weight": torch.zeros(2)}),
    "json": b'["not", "a", "config"]',
}


def corrupt(path: Path, kind: str, good: bytes, role: str) -> Path:
    data = {"empty": b"", "truncated": good[: len(good) // 2], "random": RANDOM, "unsafe_pickle": UNSAFE}
    path.write_bytes(WRONG[role] if kind == "wrong_format" else data[kind])
    return path


def outcome(capsys, argv: list[str], named: Path, torch_kind: str | None = None) -> str | None:
    """None when ``vislang ARGV`` exits 2 with one stderr line naming ``named``, else what happened;
    ``torch_kind``: a torch file's corruption, which the line must call unsafe iff it is unsafe."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    except Exception as error:  # a traceback on the command line
        return f"traceback ({type(error).__name__}: {str(error)[:80]!r})"
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    if "pwned" in captured.out:
        return "ran pickled code"
    if code != 2:
        return f"exit {code}"
    if len(lines) != 1 or "Traceback" in captured.err:
        return f"{len(lines)} stderr lines"
    return _named(lines[0], named, torch_kind)


def _named(line: str, named: Path, torch_kind: str | None = None) -> str | None:
    if "can still be loaded" in line or "weights_only" in line or "\x1b" in line:
        return f"repeats PyTorch's advice to load it anyway: {line[:160]!r}"
    if torch_kind is not None and ("could run code" in line) != (torch_kind == "unsafe_pickle"):
        return f"calls a {torch_kind} file {'safe' if torch_kind == 'unsafe_pickle' else 'unsafe'}: {line[:160]!r}"
    return None if str(named) in line else f"does not name the file: {line[:160]!r}"


def load_outcome(path: Path, named: Path, torch_kind: str | None = None) -> str | None:
    """``vislang.load(path)`` must raise one VislangError line naming ``named``."""
    try:
        vislang.load(path)
    except VislangError as error:
        text = str(error)
        if "\n" in text.strip():
            return "multi-line message"
        return _named(text, named, torch_kind)
    except Exception as error:
        return f"traceback ({type(error).__name__}: {str(error)[:80]!r})"
    return "loaded"


class Failures(dict):
    """The cells of a matrix that broke: cell -> what happened instead."""

    def add(self, cell: str, how: str | None) -> None:
        if how:
            self[cell] = how

    def check(self) -> None:
        assert not self, "cells that failed:\n" + "\n".join(f"  {cell}: {how}" for cell, how in self.items())


# -- models and files --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A tiny CLIP as an export and as a checkpoint file, a tiny captioner, and inputs."""
    root = tmp_path_factory.mktemp("models")
    cfg = build_config({}, TINY)
    export = Path(export_untrained(cfg, TEXTS, root / "clip"))
    torch.save(read_export(export), root / "clip.pt")
    cap = Path(export_untrained(build_config({}, TINY + ["objective=cap"]), TEXTS, root / "cap"))
    (root / "images").mkdir()
    Image.new("RGB", (32, 32), (200, 20, 20)).save(root / "images" / "red.png")
    (root / "texts.txt").write_text("a red circle\na blue square\n")
    (root / "run.yaml").write_text(to_yaml(cfg))
    return {"root": root, "export": export, "checkpoint": root / "clip.pt", "cap": cap, "cfg": cfg}


def model_commands(model: Path, m: dict, out: Path) -> dict[str, list]:
    """Every command that reads a vislang checkpoint or export, by name."""
    return {
        "eval": ["eval", model],
        "export": ["export", model, "--out", out / "exported"],
        "embed --images": ["embed", model, "--images", m["root"] / "images", "--out", out / "i.npy", "--quiet"],
        "embed --texts": ["embed", model, "--texts", m["root"] / "texts.txt", "--out", out / "t.npy", "--quiet"],
        "caption": ["caption", model, m["root"] / "images" / "red.png"],
        "convert --to open_clip": ["convert", "--to", "open_clip", "--weights", model, "--out", out / "oc"],
        "convert --to hf": ["convert", "--to", "hf", "--weights", model, "--out", out / "hf"],
    }


def run_model_commands(capsys, model: Path, named: Path, m: dict, out: Path, label: str, failures: Failures,
                       torch_kind: str | None = None) -> None:  # fmt: skip
    for name, argv in model_commands(model, m, out).items():
        failures.add(f"{name} × {label}", outcome(capsys, argv, named, torch_kind))
    failures.add(f"vislang.load × {label}", load_outcome(model, named, torch_kind))


# -- the matrix ----------------------------------------------------------------------------------------


def test_a_broken_checkpoint_file_is_one_line_for_every_command(models, capsys, tmp_path):
    good = models["checkpoint"].read_bytes()
    failures = Failures()
    for kind in (*KINDS, "python_object"):
        path = tmp_path / kind / "step_00000006.pt"
        path.parent.mkdir()
        if kind == "python_object":  # an allowlisted class, not a checkpoint
            torch.save({"model": {}, "config": {}, "x": collections.OrderedDict}, path)
        else:
            corrupt(path, kind, good, "torch")
        run_model_commands(capsys, path, path, models, tmp_path / kind, f"checkpoint {kind}", failures, kind)
    failures.check()


# JSON that is not a tokenizer: each made the tokenizer reader raise something else
NOT_A_TOKENIZER = {"an object": '{"model": 1}', "a number": "3", "a string": '"abc"'}


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "model.safetensors"])
def test_a_broken_export_file_is_one_line_for_every_command(models, capsys, tmp_path, name):
    good = (models["export"] / name).read_bytes()
    role = "safetensors" if name.endswith(".safetensors") else "json"
    failures = Failures()
    for kind in (*KINDS, *(NOT_A_TOKENIZER if name == "tokenizer.json" else ())):
        export = tmp_path / kind / "export"
        shutil.copytree(models["export"], export)
        if kind in NOT_A_TOKENIZER:
            (export / name).write_text(NOT_A_TOKENIZER[kind])
        else:
            corrupt(export / name, kind, good, role)
        run_model_commands(capsys, export, export / name, models, tmp_path / kind, f"{name} {kind}", failures)
    failures.check()


def test_convert_from_open_clip_with_broken_weights_is_one_line(models, capsys, tmp_path):
    state = read_export(models["export"])["model"]  # any well-formed weights: the broken copies never load
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "good.safetensors"))
    torch.save({"state_dict": state}, tmp_path / "good.pt")
    vision = {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8}
    text = {"context_length": 24, "vocab_size": 300, "width": 32, "heads": 2, "layers": 1}
    hub = json.dumps({"model_cfg": {"embed_dim": 32, "vision_cfg": vision, "text_cfg": text}}).encode()
    failures = Failures()
    for kind in KINDS:
        for suffix, role in ((".safetensors", "safetensors"), (".pt", "torch"), (".bin", "torch")):
            good = (tmp_path / f"good{suffix if suffix != '.bin' else '.pt'}").read_bytes()
            weights = corrupt(tmp_path / f"{kind}{suffix}", kind, good, role)
            argv = ["convert", "--from", "open_clip", "--arch", "tiny", "--weights", weights, "--out", tmp_path / "o"]
            how = outcome(capsys, argv, weights, kind if role == "torch" else None)
            failures.add(f"convert --from open_clip --weights W{suffix} × {kind}", how)
        for name, good, role in (
            (convert.OPEN_CLIP_CONFIG, hub, "json"),
            (convert.OPEN_CLIP_WEIGHTS, (tmp_path / "good.safetensors").read_bytes(), "safetensors"),
        ):
            folder = tmp_path / f"folder-{kind}-{name}"
            folder.mkdir()
            (folder / convert.OPEN_CLIP_CONFIG).write_bytes(hub)
            broken = corrupt(folder / name, kind, good, role)
            argv = ["convert", "--from", "open_clip", "--weights", folder, "--out", tmp_path / "o"]
            failures.add(f"convert --from open_clip DIR × {name} {kind}", outcome(capsys, argv, broken))
            failures.add(f"vislang.load(open_clip DIR) × {name} {kind}", load_outcome(folder, broken))
    failures.check()


def tiny_hf_clip(out: Path) -> Path:
    """A small random Hugging Face CLIPModel directory (config.json + model.safetensors)."""
    transformers = pytest.importorskip("transformers")
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    text, vision = {**small, "max_position_embeddings": 77}, {**small, "image_size": 32, "patch_size": 8}
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)
    transformers.CLIPModel(config).save_pretrained(out)
    return out


def test_convert_from_hf_with_a_broken_file_is_one_line(models, capsys, tmp_path):
    hf = tiny_hf_clip(tmp_path / "hf")
    failures = Failures()
    for kind in KINDS:
        for name, role in ((convert.HF_CONFIG, "json"), (convert.HF_WEIGHTS, "safetensors")):
            folder = tmp_path / f"{kind}-{name}"
            shutil.copytree(hf, folder)
            broken = corrupt(folder / name, kind, (hf / name).read_bytes(), role)
            argv = ["convert", "--from", "hf", "--weights", folder, "--out", tmp_path / "o"]
            failures.add(f"convert --from hf × {name} {kind}", outcome(capsys, argv, broken))
            failures.add(f"vislang.load(hf DIR) × {name} {kind}", load_outcome(folder, broken))
    failures.check()


def test_resume_from_a_run_whose_only_checkpoint_is_broken_is_one_line(models, capsys, tmp_path):
    good = models["checkpoint"].read_bytes()
    failures = Failures()
    for kind in KINDS:
        run = tmp_path / kind
        (run / "checkpoints").mkdir(parents=True)
        broken = corrupt(run / "checkpoints" / "step_00000006.pt", kind, good, "torch")
        argv = ["train", models["root"] / "run.yaml", "--out", run, "--resume", "--quiet"]
        failures.add(f"train --resume × {kind}", outcome(capsys, argv, broken, kind))
    failures.check()


# -- tokenizers and pretrained text towers -----------------------------------------------------------


def raises_one_line(call, named: str) -> str | None:
    """None when ``call()`` raises one VislangError line containing ``named``."""
    try:
        call()
    except VislangError as error:
        one = "\n" not in str(error).strip() and named in str(error)
        return None if one else f"not one line naming {named}: {str(error)[:160]!r}"
    except Exception as error:
        return f"traceback ({type(error).__name__}: {str(error)[:80]!r})"
    return "read without an error"


def test_a_broken_tokenizer_is_one_line_from_every_reader(tmp_path):
    tokenizer = BPETokenizer.train(TEXTS, 300, 24)
    good = tokenizer.to_json().encode()
    folder = tmp_path / "hf"
    folder.mkdir()
    tokenizer.tokenizer.save(str(folder / "tokenizer.json"))
    specials = json.dumps({"cls_token": "<sot>", "sep_token": "<eot>", "pad_token": "<pad>"}).encode()
    (folder / "special_tokens_map.json").write_bytes(specials)
    assert BPETokenizer.pretrained(folder, 24).eot_id == tokenizer.eot_id
    failures = Failures()
    for kind in (*KINDS, "not_a_tokenizer"):
        path = tmp_path / f"{kind}.json"
        if kind == "not_a_tokenizer":
            path.write_text('{"model": 1}')
        else:
            corrupt(path, kind, good, "json")
        text = path.read_bytes().decode("utf-8", errors="replace")
        for label, call, named in (
            ("BPETokenizer.load", lambda p=path: BPETokenizer.load(p, 24), str(path)),
            ("BPETokenizer.from_json", lambda t=text: BPETokenizer.from_json(t, 24), "tokenizer"),
        ):
            failures.add(f"{label} × {kind}", raises_one_line(call, named))
        for name, not_one in (("tokenizer.json", '{"model": 1}'), ("special_tokens_map.json", '["<eot>"]')):
            broken = tmp_path / f"hf-{kind}" / name.removesuffix(".json")
            shutil.copytree(folder, broken)
            if kind == "not_a_tokenizer":
                (broken / name).write_text(not_one)
            else:
                corrupt(broken / name, kind, (folder / name).read_bytes(), "json")
            how = raises_one_line(lambda b=broken: BPETokenizer.pretrained(b, 24), str(broken / name))
            failures.add(f"BPETokenizer.pretrained × {name} {kind}", how)
    failures.check()


def test_an_export_naming_an_unreadable_pretrained_text_encoder_is_one_line(models, capsys, tmp_path):
    transformers = pytest.importorskip("transformers")
    encoder = tmp_path / "encoder"
    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=300)
    transformers.BertModel(transformers.BertConfig(**small), add_pooling_layer=False).save_pretrained(encoder)
    failures = Failures()
    cases = [("missing", tmp_path / "nowhere")]
    for kind in KINDS:
        for name, role in (("config.json", "json"), ("model.safetensors", "safetensors")):
            folder = tmp_path / f"{kind}-{name}"
            shutil.copytree(encoder, folder)
            corrupt(folder / name, kind, (encoder / name).read_bytes(), role)
            cases.append((f"{name} {kind}", folder))
    for label, folder in cases:
        export = tmp_path / f"export-{label.replace(' ', '-')}"
        shutil.copytree(models["export"], export)
        saved = json.loads((export / "config.json").read_text())
        saved["model"]["text"] |= {"pretrained": str(folder), "pool": "cls"}
        (export / "config.json").write_text(json.dumps(saved))
        commands = model_commands(export, models, tmp_path / "out")
        for name in ("eval", "export", "embed --texts"):
            failures.add(f"{name} × pretrained {label}", outcome(capsys, commands[name], folder))
        failures.add(f"vislang.load × pretrained {label}", load_outcome(export, folder))
    failures.check()


# -- images: skipped and counted, the good ones still written ---------------------------------------


def _bomb_png(size: int = 30000) -> bytes:
    """A valid 30000x30000 1-bit PNG (9e8 pixels), about 0.5 MB: zeros compress well."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows, stream = bytes(1 + (size + 7) // 8) * 1000, zlib.compressobj(1)
    idat = b"".join([stream.compress(rows) for _ in range(size // 1000)] + [stream.flush()])
    header = struct.pack(">IIBBBBB", size, size, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bad_images() -> dict[str, tuple[bytes, str]]:
    """Broken image files by kind, with the skip reason each must be counted under."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
    good, bomb = buffer.getvalue(), _bomb_png()
    assert len(bomb) < 1_000_000
    bad = {"empty": b"", "truncated": good[: len(good) // 2], "random": RANDOM}
    return {kind: (data, "bad_image") for kind, data in bad.items()} | {"bomb": (bomb, "too_large")}


@pytest.mark.parametrize("command", ["embed --images", "caption"])
@pytest.mark.parametrize("kind", ["empty", "truncated", "random", "bomb"])
def test_a_broken_image_is_skipped_and_counted(models, bad_images, capsys, tmp_path, kind, command):
    data, reason = bad_images[kind]
    folder = tmp_path / "images"
    images = [folder / "a.png", folder / "b.png", folder / "sub" / "c.png"]
    images[2].parent.mkdir(parents=True)
    Image.new("RGB", (32, 32), (200, 20, 20)).save(images[0])
    images[1].write_bytes(data)
    Image.new("RGB", (40, 30), (20, 20, 200)).save(images[2])
    capsys.readouterr()
    if command == "caption":
        code = main(["caption", str(models["cap"]), *map(str, images), "--max-length", "6"])
    else:
        code = main(
            ["embed", str(models["export"]), "--images", str(folder), "--out", str(tmp_path / "e.npy"), "--quiet"]
        )
    captured = capsys.readouterr()
    assert code == 0
    if command == "caption":
        assert [line.split("\t")[0] for line in captured.out.splitlines()] == [str(images[0]), str(images[2])]
    else:
        assert (tmp_path / "e.ids.txt").read_text().split() == ["a.png", "sub/c.png"]
        assert np.load(tmp_path / "e.npy").shape == (2, 32)
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "skipped 1 unreadable image of 3: 1 " + reason in err[0] and "b.png" in err[0], err


def test_caption_of_a_missing_image_stops_before_loading_the_model(models, capsys, tmp_path, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the image paths were checked")

    monkeypatch.setattr(vislang.api, "load_objective", no_loading)
    capsys.readouterr()
    code = main(["caption", str(models["cap"]), str(models["root"] / "images" / "red.png"), str(tmp_path / "no.png")])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.strip().splitlines() == [f"vislang: error: image not found: {tmp_path / 'no.png'}"]
