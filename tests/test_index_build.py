"""``vislang index``'s embedding step: items of every source kind at stable positions, parts whose
embeddings equal the model's own, skipped samples counted, resume after SIGKILL, and the same
parts from torchrun ranks and Ray tasks as from one process."""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

import vislang
from tar_helpers import png, write_tar
from vislang.cli import index as index_cli
from vislang.data.decode import open_image
from vislang.search.build import check_job
from vislang.search.items import open_items


def index(*argv: str) -> dict:
    """``vislang index ARGV`` in this process; the manifest it wrote."""
    parser = argparse.ArgumentParser()
    index_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["index", *argv, "--quiet"])
    assert args.func(args) == 0
    return json.loads((Path(args.out) / "manifest.json").read_text())


CLI = "vislang.cli"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the model's threads and the decoding workers share 2 cores


def cli(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", CLI, "index", *argv, "--quiet"], capture_output=True,
                          text=True, timeout=300, env=env or ENV)  # fmt: skip


def rows(out) -> pa.Table:
    """Every part's rows, read with pyarrow alone, in id order."""
    tables = [pq.read_table(p) for p in sorted((out / "parts").glob("part-*.parquet"))]
    return pa.concat_tables(tables).sort_by("id")


def vectors(table: pa.Table, column: str) -> np.ndarray:
    return np.array([v if v is not None else [np.nan] * 32 for v in table.column(column).to_pylist()], np.float32)


def images(folder, n: int, captions: bool, seed: int = 0) -> list[str]:
    """``n`` varied JPEG/PNG images (some in a subfolder), with a caption file for every other one."""
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        name = f"{'sub/' if i % 3 == 0 else ''}{i:03d}.{'png' if i % 4 == 0 else 'jpg'}"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (30 + i, 44, 3), dtype=np.uint8)).save(folder / name)
        if captions and i % 2:
            (folder / name).with_suffix(".txt").write_text(f"a picture number {i}")
        names.append(name)
    return sorted(names)


def expected_images(tiny_run, paths) -> np.ndarray:
    model, _, preprocess = vislang.load(tiny_run)
    with torch.no_grad():
        return model.encode_image(torch.stack([preprocess(open_image(p, 10**8)) for p in paths])).numpy()


def test_folder_without_captions_is_indexed(tiny_run, tmp_path):
    names = images(tmp_path / "pics", 11, captions=False)
    manifest = index(str(tmp_path / "pics"), "--model", str(tiny_run), "--out", str(tmp_path / "ix"),
                     "--part-size", "4", "--batch-size", "3", "--workers", "2")  # fmt: skip
    table = rows(tmp_path / "ix")
    assert table.column("id").to_pylist() == list(range(11)) and table.column("key").to_pylist() == names
    assert table.column("caption").null_count == 11 and table.column("text_embedding").null_count == 11
    expected = expected_images(tiny_run, [tmp_path / "pics" / n for n in names])
    np.testing.assert_allclose(vectors(table, "image_embedding"), expected, atol=1e-6)
    assert manifest["count"] == 11 and manifest["captions"] == 0 and manifest["parts"] == 3
    assert manifest["skipped"] == {} and set(manifest["faiss"]) == {"image"}
    thumb = Image.open(io.BytesIO(table.column("thumbnail")[10].as_py()))
    original = Image.open(tmp_path / "pics" / names[10])
    assert thumb.format == "JPEG" and thumb.size == original.size  # small images are not enlarged
    assert (tmp_path / "ix" / "image.faiss").is_file() and not (tmp_path / "ix" / "text.faiss").exists()


def test_folder_with_captions_and_a_corrupt_image(tiny_run, tmp_path):
    names = images(tmp_path / "pics", 8, captions=True)
    (tmp_path / "pics" / "broken.jpg").write_bytes(b"not a jpeg")
    manifest = index(str(tmp_path / "pics"), "--model", str(tiny_run), "--out", str(tmp_path / "ix"),
                     "--part-size", "5", "--no-thumbnails")  # fmt: skip
    table = rows(tmp_path / "ix")
    everything = sorted([*names, "broken.jpg"])  # positions in sorted path order, the broken one's left empty
    assert table.column("key").to_pylist() == names and manifest["skipped"] == {"bad_image": 1}
    assert table.column("id").to_pylist() == [i for i, n in enumerate(everything) if n != "broken.jpg"]
    assert table.column("thumbnail").null_count == 8 and manifest["positions"] == 9
    captions = table.column("caption").to_pylist()
    assert captions == [f"a picture number {int(n[-7:-4])}" if int(n[-7:-4]) % 2 else None for n in names]
    model, tokenizer, _ = vislang.load(tiny_run)
    with torch.no_grad():
        expected = model.encode_text(tokenizer([c for c in captions if c])).numpy()
    texts = vectors(table, "text_embedding")
    np.testing.assert_allclose(texts[[c is not None for c in captions]], expected, atol=1e-6)
    assert manifest["captions"] == 4 and set(manifest["faiss"]) == {"image", "text"}


def test_int8_quantized_embeddings_stay_close_to_fp32_and_are_recorded(tiny_run, tmp_path):
    from vislang.errors import ConfigError, DataError
    from vislang.search.quantize import agreement

    names = images(tmp_path / "pics", 12, captions=True)
    manifest = index(str(tmp_path / "pics"), "--model", str(tiny_run), "--out", str(tmp_path / "ix"),
                     "--no-thumbnails", "--quantize", "int8")  # fmt: skip
    table = rows(tmp_path / "ix")
    quantized = vectors(table, "image_embedding")
    expected = expected_images(tiny_run, [tmp_path / "pics" / n for n in names])
    close = agreement(expected / np.linalg.norm(expected, axis=1, keepdims=True), quantized)
    assert not np.allclose(quantized, expected, atol=1e-6)  # the int8 kernels did run
    assert close["min_cosine"] > 0.98 and manifest["job"]["quantize"] == "int8"
    with pytest.raises(DataError, match="already an index with quantize 'int8'"):  # parts must not mix
        index(str(tmp_path / "pics"), "--model", str(tiny_run), "--out", str(tmp_path / "ix"), "--no-thumbnails")
    for extra, message in ((["--device", "cuda"], "CPU only"), (["--precision", "bf16"], "give one of them")):
        with pytest.raises(ConfigError, match=message):
            index(str(tmp_path / "pics"), "--model", str(tiny_run), "--out", str(tmp_path / "new"), "--quantize",
                  "int8", *extra)  # fmt: skip
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("sets", [["model.vision.pool=map"], ["objective=coca", "objective.decoder.n_queries=4"]])
def test_int8_keeps_the_projections_cross_attention_slices(sets):
    """An attention pool and CoCa's pooler slice their input projection by weight: those stay
    fp32 linears, every other linear is quantized, and the image embedding stays close."""
    from conftest import TINY
    from vislang.experiment import build_config, build_objective
    from vislang.search.quantize import quantize_int8, sliced_projections

    objective = build_objective(build_config({}, [*TINY, *sets]), 300, 0, None).eval()
    quantized = quantize_int8(objective)
    linears = [m for m in quantized.modules() if type(m) is torch.nn.Linear]
    assert len(linears) == len(sliced_projections(objective)) > 0
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        cosine = (objective.model.encode_image(images) * quantized.model.encode_image(images)).sum(-1)
    assert cosine.min() > 0.99


def test_thumbnail_fits_the_box(tiny_run, tmp_path):
    (tmp_path / "pics").mkdir()
    Image.new("RGB", (400, 100), (10, 200, 30)).save(tmp_path / "pics" / "wide.png")
    index(str(tmp_path / "pics"), "--model", str(tiny_run), "--out", str(tmp_path / "ix"), "--thumbnail-size", "80")
    thumb = Image.open(io.BytesIO(rows(tmp_path / "ix").column("thumbnail")[0].as_py()))
    assert thumb.size == (80, 20)


def test_table_of_image_bytes_and_several_sources(tiny_run, tmp_path):
    colours = [(200, 20, 20), (20, 200, 20), (20, 20, 200)]
    encoded = [png(c, (24, 24)) for c in colours]
    pq.write_table(
        pa.table({"jpg": encoded + [b"junk"], "text": ["red", "green", None, "bad"]}), tmp_path / "t.parquet"
    )
    names = images(tmp_path / "pics", 3, captions=False)
    manifest = index(str(tmp_path / "t.parquet"), str(tmp_path / "pics"), "--model", str(tiny_run), "--out",
                     str(tmp_path / "ix"), "--image-column", "jpg", "--caption-column", "text", "--part-size", "3")  # fmt: skip
    table = rows(tmp_path / "ix")
    assert table.column("id").to_pylist() == [0, 1, 2, 4, 5, 6]  # row 3 does not decode
    assert table.column("key").to_pylist() == ["0", "1", "2", *names]
    assert table.column("caption").to_pylist() == ["red", "green", None, None, None, None]
    model, _, preprocess = vislang.load(tiny_run)
    with torch.no_grad():
        expected = model.encode_image(
            torch.stack([preprocess(Image.open(io.BytesIO(b)).convert("RGB")) for b in encoded])
        )
    np.testing.assert_allclose(vectors(table, "image_embedding")[:3], expected.numpy(), atol=1e-6)
    assert manifest["skipped"] == {"bad_image": 1} and [s["kind"] for s in manifest["sources"]] == ["table", "folder"]


def test_shards_random_access_and_streamed(tiny_run, broken_shards, tmp_path):
    spec = str(broken_shards / "{00000..00002}.tar")
    manifest = index(spec, "--model", str(tiny_run), "--out", str(tmp_path / "ix"), "--max-image-pixels", "10000",
                     "--part-size", "4")  # fmt: skip
    table = rows(tmp_path / "ix")
    assert table.column("key").to_pylist() == ["a/s0", "a/s1", "a/s4", "a/s5", "a/s6", "b/t0"]
    assert table.column("caption").to_pylist() == ["a red square", "red", None, None, None, "fine"]
    assert manifest["skipped"] == {"bad_image": 2, "missing_image": 1, "too_large": 1, "truncated_shard": 1}
    assert manifest["positions"] == 11
    model, _, preprocess = vislang.load(tiny_run)
    with torch.no_grad():
        expected = model.encode_image(preprocess(open_image(png(), 10**8))[None]).numpy()
    np.testing.assert_allclose(vectors(table, "image_embedding"), np.repeat(expected, 6, 0), atol=1e-6)
    # the first shard streamed through a pipe: the same samples at the same positions
    streamed = index(f"pipe:cat {broken_shards / '00000.tar'}", "--model", str(tiny_run), "--out",
                     str(tmp_path / "st"), "--max-image-pixels", "10000", "--part-size", "4")  # fmt: skip
    stream_table = rows(tmp_path / "st")
    assert stream_table.column("key").to_pylist() == table.column("key").to_pylist()[:5]
    assert stream_table.column("id").to_pylist() == table.column("id").to_pylist()[:5]
    assert streamed["positions"] == 9 and streamed["skipped"] == {"bad_image": 2, "missing_image": 1, "too_large": 1}


def test_a_stream_must_come_last_and_other_jobs_are_refused(tiny_run, tmp_path):
    images(tmp_path / "pics", 2, captions=False)
    with pytest.raises(vislang.errors.DataError, match="must come after the local ones"):
        open_items(["pipe:cat nothing.tar", str(tmp_path / "pics")])
    with pytest.raises(vislang.errors.DataError, match="source not found: .*nope"):
        open_items([str(tmp_path / "nope")])
    out = tmp_path / "ix"
    index(str(tmp_path / "pics"), "--model", str(tiny_run), "--out", str(out))
    other = str(next((tiny_run / "checkpoints").iterdir()))
    refused = cli(str(tmp_path / "pics"), "--model", other, "--out", str(out))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.count("\n") == 1 and "already an index with model" in refused.stderr
    assert "part_size" in cli(str(tmp_path / "pics"), "--model", str(tiny_run), "--out", str(out),
                              "--part-size", "7").stderr  # fmt: skip
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "notes.txt").write_text("mine")
    items = open_items([str(tmp_path / "pics")])
    with pytest.raises(vislang.errors.DataError, match="not a vislang index"):
        check_job(tmp_path / "elsewhere", {"model": "m", "sources": items.specs})
    manifest = index(str(tmp_path / "pics"), "--model", other, "--out", str(out), "--overwrite")
    assert manifest["model"] == other


def assert_same_index(a, b) -> None:
    """Two index directories hold the same parts: rows, keys, captions, thumbnails, embeddings."""
    assert sorted(p.name for p in (a / "parts").iterdir()) == sorted(p.name for p in (b / "parts").iterdir())
    ta, tb = rows(a), rows(b)
    for column in ("id", "key", "caption", "thumbnail"):
        assert ta.column(column).to_pylist() == tb.column(column).to_pylist(), column
    for column in ("image_embedding", "text_embedding"):
        np.testing.assert_allclose(vectors(ta, column), vectors(tb, column), atol=1e-6)
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    assert {k: ma[k] for k in ("count", "captions", "skipped", "positions")} == {
        k: mb[k] for k in ("count", "captions", "skipped", "positions")
    }


@pytest.fixture
def collection(tmp_path):
    """A folder with captions, then four streamed shards that each arrive after a pause (so a
    job is still running, with parts already written, when the test kills it)."""
    images(tmp_path / "pics", 14, captions=True)
    shards = []
    for s in range(4):
        members = [(f"k{s}/{i}.png", png((40 * s, 9 * i, 100), (20 + i, 20))) for i in range(5)]
        write_tar(
            tmp_path / f"s{s}.tar", members + [(f"k{s}/{i}.txt", f"shard {s} image {i}".encode()) for i in range(3)]
        )
        shards.append(f"pipe:sleep 0.5; cat {tmp_path / f's{s}.tar'}")
    return [str(tmp_path / "pics"), "::".join(shards)]


def test_resume_after_sigkill_gives_the_same_index(tiny_run, collection, tmp_path):
    argv = [*collection, "--model", str(tiny_run), "--part-size", "3", "--batch-size", "2", "--workers", "1"]
    index(*argv, "--out", str(tmp_path / "whole"))
    command = [sys.executable, "-m", CLI, "index", *argv, "--out", str(tmp_path / "killed"), "--quiet"]
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    parts = tmp_path / "killed" / "parts"
    while job.poll() is None and len(list(parts.glob("part-*.parquet"))) < 6:  # the folder's 5 and a stream part
        time.sleep(0.01)
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    written = len(list(parts.glob("part-*.parquet")))
    assert (
        job.returncode == -signal.SIGKILL and 6 <= written < 12 and not (tmp_path / "killed" / "manifest.json").exists()
    )
    before = {p.name: p.stat().st_mtime_ns for p in parts.glob("part-*.parquet")}
    resumed = cli(*argv, "--out", str(tmp_path / "killed"))
    assert resumed.returncode == 0, resumed.stderr
    assert {p.name: p.stat().st_mtime_ns for p in parts.glob("part-*.parquet") if p.name in before} == before
    assert_same_index(tmp_path / "whole", tmp_path / "killed")


def test_torchrun_ranks_write_the_same_index(tiny_run, collection, tmp_path):
    argv = [*collection, "--model", str(tiny_run), "--part-size", "4", "--batch-size", "3", "--workers", "1"]
    index(*argv, "--out", str(tmp_path / "one"))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
               "-m", CLI, "index", *argv, "--out", str(tmp_path / "two"), "--quiet"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("indexed ") == 1  # rank 0 reports
    assert_same_index(tmp_path / "one", tmp_path / "two")


@pytest.mark.slow  # a local Ray's start and two tasks that each load the model: about a minute here
def test_ray_tasks_write_the_same_index(tiny_run, collection, tmp_path):
    pytest.importorskip("ray")
    argv = [*collection, "--model", str(tiny_run), "--part-size", "4", "--batch-size", "3", "--workers", "0"]
    index(*argv, "--out", str(tmp_path / "one"))
    env = {k: v for k, v in ENV.items() if k != "RAY_ADDRESS"}
    result = cli(*argv, "--out", str(tmp_path / "ray"), "--engine", "ray", "--tasks", "2", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_index(tmp_path / "one", tmp_path / "ray")
