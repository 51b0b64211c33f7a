"""Webdataset shards: every broken case skipped and counted by reason through the training loop,
brace-expanded shard lists, the shard writer, inspect, and training on synthesised shards."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from tar_helpers import BROKEN_SKIPS, png, skips_after_two_passes, write_tar
from vislang.data.shards import ShardIndex, expand_shards, split_key
from vislang.errors import DataError
from vislang.experiment import build_config
from vislang.train.loop import train


def test_index_keys_follow_webdataset(broken_shards):
    assert split_key("a/b/s0.seg.png") == ("a/b/s0", "seg.png")
    index = ShardIndex.scan(expand_shards(str(broken_shards / "{00000..00002}.tar")))
    assert len(index.samples) == 9 + 2 and index.empty == [broken_shards / "00001.tar"]


def test_every_broken_case_is_counted_by_reason(broken_shards, tiny_overrides, tmp_path):
    spec = str(broken_shards / "{00000..00002}.tar")
    got = skips_after_two_passes(f"{{kind: shards, path: '{spec}'}}", tiny_overrides, tmp_path / "run")
    assert got == {k: 2.0 * v for k, v in BROKEN_SKIPS.items()}  # two epochs
    log = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert "data/skipped/truncated_shard" in log


def test_bad_shard_lists_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="shard not found"):
        expand_shards(str(tmp_path / "{000..002}.tar"))
    with pytest.raises(DataError, match="access: stream"):
        expand_shards("https://example.com/{000..002}.tar")
    write_tar(tmp_path / "0.tar", [])
    with pytest.raises(DataError, match="no samples"):
        ShardIndex.scan([tmp_path / "0.tar"])


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "vislang.cli", *args], capture_output=True, text=True, timeout=300)


def test_make_shards_from_a_folder_and_inspect(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(5):
        (folder / f"{i}.png").write_bytes(png((40 * i, 0, 0)))
        (folder / f"{i}.txt").write_text(f"image number {i}")
    result = run_cli(
        "data", "make-shards", "folder", str(folder), "--out", str(tmp_path / "shards"), "--shard-size", "2"
    )
    assert result.returncode == 0, result.stderr
    sizes = json.loads((tmp_path / "shards" / "sizes.json").read_text())
    assert sizes == {"00000.tar": 2, "00001.tar": 2, "00002.tar": 1}
    with tarfile.open(tmp_path / "shards" / "00000.tar") as tar:
        member = tar.extractfile(next(m for m in tar if m.name.endswith(".png")))
        assert member.read() == png((0, 0, 0))  # copied byte for byte
    result = run_cli(
        "data", "inspect", "shards", str(tmp_path / "shards" / "{00000..00002}.tar"), "--out", str(tmp_path / "inspect")
    )
    assert result.returncode == 0, result.stderr
    assert "5 of 5 samples usable" in result.stdout and (tmp_path / "inspect" / "inspect.png").exists()


def test_training_on_synthesised_world_shards(tmp_path, tiny_overrides):
    result = run_cli(
        "data", "synth", "--out", str(tmp_path / "shards"), "--n", "300", "--shard-size", "100", "--image-size", "32"
    )
    assert result.returncode == 0, result.stderr
    spec = str(tmp_path / "shards" / "{00000..00002}.tar")
    cfg = build_config(
        {},
        tiny_overrides
        + [
            f"data.sources=[{{kind: shards, path: '{spec}'}}]",
            "train.steps=4",
            "train.eval_every=4",
            "train.checkpoint_every=4",
        ],
    )
    metrics = train(cfg, tmp_path / "run", quiet=True)
    assert not any(k.startswith("data/skipped/") for k in metrics)
    assert 0 <= metrics["zeroshot/color/top1"] <= 1
    # the shards hold exactly the world's samples
    from vislang.data import build_sources
    from vislang.data.world import World

    (source,) = build_sources(cfg.data, cfg.model.vision.image_size, cfg.train.seed).values()
    image, caption = source.get(0, np.random.default_rng(0))
    index = source.order.row(0)
    world_image, world_caption, _ = World(32).sample("train", index)
    assert caption == world_caption and np.array_equal(image, world_image)
    # read in their stored order, the shards give exactly the on-the-fly world's batches
    import torch

    from vislang.data import build_batches

    ordered = build_config({}, [*tiny_overrides, f"data.sources=[{{kind: shards, path: '{spec}', shuffle: false}}]"])
    on_the_fly = build_config({}, [*tiny_overrides, "data.sources=[{kind: world}]"])
    assert ordered.model.vision.image_size == 32 and on_the_fly.data.world == ordered.data.world

    def tokenize(texts):
        return torch.tensor([[len(t)] for t in texts])

    def batches(cfg):
        sources = build_sources(cfg.data, cfg.model.vision.image_size, cfg.train.seed)
        return build_batches(cfg.data, cfg.model.vision, cfg.train.batch_size, cfg.train.seed, tokenize, sources)

    for step in (0, 1):
        a, b = batches(ordered)[step], batches(on_the_fly)[step]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["text"], b["text"])


def test_resume_continues_a_mixed_shard_and_table_stream(tmp_path, tiny_overrides):
    import shutil

    import torch

    from vislang.checkpoint import load_checkpoint

    result = run_cli(
        "data", "synth", "--out", str(tmp_path / "shards"), "--n", "90", "--shard-size", "30", "--image-size", "32"
    )
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(7):
        (folder / f"{i}.png").write_bytes(png((30 * i, 100, 0), size=(40, 30)))
        (folder / f"{i}.txt").write_text(f"a picture number {i}")
    sources = (
        f"data.sources=[{{kind: shards, path: '{tmp_path / 'shards' / '{00000..00002}.tar'}', weight: 3}}, "
        f"{{kind: folder, path: '{folder}', weight: 1}}]"
    )
    cfg = build_config(
        {},
        tiny_overrides
        + [
            sources,
            "data.random_crop=true",
            "train.steps=6",
            "train.checkpoint_every=3",
            "train.eval_every=6",
            "eval.tasks=[]",
        ],
    )
    train(cfg, tmp_path / "whole", quiet=True)
    shutil.copytree(tmp_path / "whole", tmp_path / "resumed")
    (tmp_path / "resumed" / "checkpoints" / "step_00000006.pt").unlink()
    metrics = train(cfg, tmp_path / "resumed", resume=True, quiet=True)
    whole = load_checkpoint(tmp_path / "whole" / "checkpoints" / "step_00000006.pt")
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "step_00000006.pt")
    for name, tensor in whole["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    assert metrics["data/source/folder1"] + metrics["data/source/shards0"] == 6 * cfg.train.batch_size


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_member_index_equals_tarfiles(tmp_path, fmt):
    """The header-only index of a shard lists what tarfile lists, in every tar format, with long
    names (GNU long-name and pax records), unicode names, directories and empty members."""
    import io as _io

    from vislang.data.shards import tar_members

    names = ["a/s0.png", "a/s0.txt", "b" * 120 + "/s1.png", "ünïcode/s2.txt", "empty.txt"]
    if fmt == tarfile.USTAR_FORMAT:
        names[2], names[3] = "b" * 90 + "/s1.png", "plain/s2.txt"  # ustar: prefix/name split, ASCII only
    path = tmp_path / "x.tar"
    with tarfile.open(path, "w", format=fmt) as tar:
        directory = tarfile.TarInfo("a")
        directory.type = tarfile.DIRTYPE
        tar.addfile(directory)
        for i, name in enumerate(names):
            data = b"x" * (0 if name == "empty.txt" else 700 * i + 3)
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1700000000.5
            tar.addfile(info, _io.BytesIO(data))
    with tarfile.open(path) as tar:
        expected = [(m.name, m.offset_data, m.size) for m in tar if m.isfile()]
    assert list(tar_members(path)) == expected
    cut = tmp_path / "cut.tar"
    cut.write_bytes(path.read_bytes()[: expected[2][1] - 400])  # inside the third member's header
    with pytest.raises(EOFError):
        list(tar_members(cut))
    cut.write_bytes(path.read_bytes()[: expected[2][1] + 1])  # inside its data: listed, the cut is the caller's
    assert list(tar_members(cut)) == expected[:3]
    broken = bytearray(path.read_bytes())
    broken[expected[1][1] - 512 + 10] ^= 0xFF  # the second member's header no longer sums to its checksum
    cut.write_bytes(bytes(broken))
    with pytest.raises(tarfile.ReadError):
        list(tar_members(cut))


def test_make_shards_strips_the_caption_files_whitespace(tmp_path, capsys):
    from vislang.cli import main

    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "0.png").write_bytes(png())
    (folder / "0.txt").write_text("a red square\n")
    (folder / "1.png").write_bytes(png())
    (folder / "1.json").write_text(json.dumps({"captions": ["  a red thing \n", "   "]}))
    assert main(["data", "make-shards", "folder", str(folder), "--out", str(tmp_path / "shards")]) == 0
    with tarfile.open(tmp_path / "shards" / "00000.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    assert members["000000000.txt"] == b"a red square"
    assert json.loads(members["000000000.json"])["captions"] == ["a red square"]
    assert json.loads(members["000000001.json"])["captions"] == ["a red thing"]
    assert capsys.readouterr().err == ""


def test_make_shards_from_a_table_counts_missing_images_and_refuses_when_none_is_left(tmp_path, capsys):
    from vislang.cli import main

    (tmp_path / "there.png").write_bytes(png())
    (tmp_path / "some.csv").write_text("image,caption\nthere.png,a red square\ngone.png,lost\nalso_gone.png,lost\n")
    assert main(["data", "make-shards", "table", str(tmp_path / "some.csv"), "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "skipped 2" in err[0] and "missing_file" in err[0], err
    assert str(tmp_path / "gone.png") in err[0]
    assert json.loads((tmp_path / "a" / "sizes.json").read_text()) == {"00000.tar": 1}

    (tmp_path / "none.csv").write_text("image,caption\ngone.png,lost\nalso_gone.png,lost\n")
    assert main(["data", "make-shards", "table", str(tmp_path / "none.csv"), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no sample could be written" in err[0] and str(tmp_path / "gone.png") in err[0], err
    assert not list((tmp_path / "b").glob("*.tar")) and not (tmp_path / "b" / "sizes.json").exists()
