"""Streamed shards (webdataset): lanes over ranks and workers, fewer shards than lanes, exact
resume with and without a shuffle buffer, ``pipe:`` URLs, every broken case counted, and the
rank split of random-access sources."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tar_helpers import BROKEN_SKIPS, png, skips_after_two_passes, write_tar
from vislang.config import DataConfig, SourceConfig, VisionConfig
from vislang.data import build_batches, build_sources
from vislang.data.decode import SampleDecoder
from vislang.data.stream import BAD, ShardStream, read_sizes
from vislang.data.transforms import ImageTransform
from vislang.errors import DataError
from vislang.experiment import build_config
from vislang.train.loop import train

IMAGE_SIZE, SEED = 32, 0  # the tiny config's image size and seed


def write_shards(folder, n_shards: int, per_shard: int, sizes: bool = False) -> str:
    names = {}
    for s in range(n_shards):
        members = []
        for i in range(per_shard):
            key = f"s{s}_{i}"
            members += [(f"{key}.png", png((10 * i, 20 * s, 90), size=(12, 12))), (f"{key}.txt", key.encode())]
        write_tar(folder / f"{s:05d}.tar", members)
        names[f"{s:05d}.tar"] = per_shard
    if sizes:
        (folder / "sizes.json").write_text(json.dumps(names))
    return str(folder / f"{{00000..{n_shards - 1:05d}}}.tar")


def stream(spec: str, **kw) -> ShardStream:
    return ShardStream(spec, SampleDecoder(ImageTransform(8, "squash", False, (1.0, 1.0)), 10**6), seed=0, **kw)


def keys(samples) -> list[str]:
    return [s["__key__"] for s in samples]


@pytest.mark.parametrize("n_shards,lanes", [(3, 2), (1, 3), (2, 5)])
def test_lanes_split_every_epoch_without_overlap(tmp_path, n_shards, lanes):
    per_shard = 6
    source = stream(write_shards(tmp_path, n_shards, per_shard), shuffle_buffer=0)
    seen: list[str] = []
    for lane in range(lanes):
        # one epoch of this lane: the samples its shard visits of epoch 0 give
        plan = source._plan(lane, lanes)
        visits = 1 if n_shards < lanes else len(range(lane, n_shards, lanes))
        mine = sum(len(range(offset, per_shard, stride)) for _, stride, offset in (next(plan) for _ in range(visits)))
        samples = source.lane(lane, lanes)
        got = keys(next(samples) for _ in range(mine))
        assert mine > 0, "every lane gets data"
        seen += got
    assert sorted(seen) == sorted(f"s{s}_{i}" for s in range(n_shards) for i in range(per_shard))
    assert "lanes" in source.split(lanes)


@pytest.mark.parametrize("shuffle_buffer,sizes", [(0, False), (0, True), (7, False)])
def test_a_lane_resumes_exactly(tmp_path, shuffle_buffer, sizes):
    source = stream(write_shards(tmp_path, 3, 5, sizes=sizes), shuffle_buffer=shuffle_buffer)
    if sizes:
        assert read_sizes(source.urls) == [5, 5, 5]
    whole = source.lane(1, 2)
    first = keys(next(whole) for _ in range(40))
    resumed = source.lane(1, 2, skip=23)
    assert keys(next(resumed) for _ in range(17)) == first[23:]
    if shuffle_buffer:
        assert first[:5] != sorted(first[:5]), "the buffer shuffles"


def test_resampled_lanes_draw_their_own_shards(tmp_path):
    source = stream(write_shards(tmp_path, 4, 3), resampled=True, shuffle_buffer=0)
    a, b = source.lane(0, 2), source.lane(1, 2)
    first_a, first_b = keys(next(a) for _ in range(30)), keys(next(b) for _ in range(30))
    assert first_a != first_b
    again = source.lane(0, 2)
    assert keys(next(again) for _ in range(30)) == first_a  # seeded


def streamed_config(spec: str, **source) -> DataConfig:
    return DataConfig(sources=[SourceConfig(kind="shards", path=spec, access="stream", **source)], num_workers=2)


def data_batches(data: DataConfig, tokenize, batch_size: int = 16, rank: int = 0, world: int = 1):
    """Batches of ``data`` as the tiny config's run builds them (32-pixel images, batches of 16)."""
    sources = build_sources(data, IMAGE_SIZE, SEED)
    return build_batches(data, VisionConfig(image_size=IMAGE_SIZE), batch_size, SEED, tokenize, sources, rank, world)


def test_streamed_batches_resume_exactly_and_workers_keep_their_lane(tmp_path):
    cfg = streamed_config(write_shards(tmp_path, 3, 10), shuffle_buffer=4)
    tokenize = lambda captions: torch.zeros(len(captions), 4, dtype=torch.long)  # noqa: E731
    in_order = data_batches(cfg, tokenize)
    sequence = [in_order[b]["image"] for b in range(7)]
    fresh = data_batches(cfg, tokenize)  # batch 5 first: lane 1, re-read up to its position
    assert torch.equal(fresh[5]["image"], sequence[5])
    assert torch.equal(fresh[6]["image"], sequence[6])


def test_streamed_pipe_shards_count_every_broken_case(broken_shards, tiny_overrides, tmp_path):
    spec = f"{broken_shards}/00000.tar::pipe:cat {broken_shards}/00001.tar::file://{broken_shards}/00002.tar"
    source = f"{{kind: shards, path: '{spec}', shuffle_buffer: 0}}"
    got = skips_after_two_passes(source, tiny_overrides + ["data.num_workers=0"], tmp_path / "run")
    assert got == {k: 2.0 * v for k, v in BROKEN_SKIPS.items()}  # the same counts as random access
    assert "3 streamed shards" in (tmp_path / "run" / "log.txt").read_text()


def test_a_failed_pipe_is_counted_and_a_source_without_usable_samples_stops(tmp_path):
    source = stream(f"pipe:cat {tmp_path}/missing.tar")
    lane = source.lane(0, 1)
    assert next(lane)[BAD] == "unreadable_file"
    cfg = streamed_config(f"pipe:cat {tmp_path}/missing.tar")
    with pytest.raises(DataError, match="missing.tar"):
        build_sources(cfg, IMAGE_SIZE, SEED)
    write_tar(tmp_path / "bad.tar", [("a.png", b"not a png"), ("a.txt", b"caption")])
    (tmp_path / "captions.csv").write_text("image,caption\nnothing.png,a caption\n")
    for kind, path in (("shards", tmp_path / "bad.tar"), ("table", tmp_path / "captions.csv")):
        cfg = DataConfig(sources=[SourceConfig(kind=kind, path=str(path))])
        with pytest.raises(DataError, match=f"data source {kind}.*usable"):
            build_sources(cfg, IMAGE_SIZE, SEED)


def test_ranks_read_disjoint_parts_of_the_global_batch(tmp_path):
    (tmp_path / "images").mkdir()
    for i in range(10):
        (tmp_path / "images" / f"{i}.png").write_bytes(png((20 * i, 0, 0), size=(9, 9)))
        (tmp_path / "images" / f"{i}.txt").write_text(f"image {i}")
    data = DataConfig(sources=[SourceConfig(kind="folder", path=str(tmp_path / "images"))])
    tokenize = lambda captions: torch.tensor([[int(c.split()[1])] for c in captions])  # noqa: E731
    whole = data_batches(data, tokenize, batch_size=6)
    ranks = [data_batches(data, tokenize, batch_size=3, rank=r, world=2) for r in range(2)]
    for b in range(3):
        together = torch.cat([ranks[0][b]["text"], ranks[1][b]["text"]])
        assert torch.equal(together, whole[b]["text"])
    assert np.unique(torch.cat([ranks[0][0]["text"], ranks[1][0]["text"]])).size == 6


def test_retrieval_on_held_out_sources(tmp_path, tiny_overrides):
    spec = write_shards(tmp_path, 2, 10)
    (tmp_path / "images").mkdir()
    for i in range(6):
        (tmp_path / "images" / f"{i}.png").write_bytes(png((40 * i, 0, 0), size=(9, 9)))
        (tmp_path / "images" / f"{i}.txt").write_text(f"image {i}")
    cfg = build_config(
        {},
        tiny_overrides
        + [
            "eval.tasks=[{type: retrieval, n: 15}, "
            f"{{type: retrieval, n: 15, source: {{kind: shards, path: '{spec}', access: stream, name: held}}}}, "
            f"{{type: retrieval, n: 15, name: folder1, source: {{kind: folder, path: '{tmp_path / 'images'}'}}}}]",
            "train.steps=2",
            "train.eval_every=2",
        ],
    )
    metrics = train(cfg, tmp_path / "run", quiet=True)
    for name in ("retrieval_held", "retrieval_folder1"):
        assert 0 <= metrics[f"{name}/text_to_image/R@1"] <= metrics[f"{name}/text_to_image/R@5"] <= 1
    from vislang.data import build_source, source_retrieval_set

    held_source = cfg.eval.tasks[1].source
    held = source_retrieval_set(
        build_source(cfg.data, held_source, cfg.model.vision.image_size, cfg.train.seed, train=False), 15, 0
    )
    assert len(held.texts) == 15 and held.texts[:2] == ["s0_0", "s0_1"]
