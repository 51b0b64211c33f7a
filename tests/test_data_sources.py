"""Tables, folders, bad samples by reason, weighted mixing and the image transforms."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from vislang.config import DataConfig, SourceConfig, VisionConfig
from vislang.data import build_batches, build_sources
from vislang.data.batches import Batches
from vislang.data.source import RandomAccessSource
from vislang.data.transforms import ImageTransform
from vislang.errors import ConfigError, DataError
from vislang.experiment import build_config

IMAGE_SIZE, BATCH_SIZE, SEED = 16, 8, 0


def png_bytes(color, size=(24, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def tokenize(texts):
    return torch.tensor([[len(t)] for t in texts])


def sources_config(*sources: dict, **data) -> DataConfig:
    return DataConfig(sources=[SourceConfig(**s) for s in sources], **data)


def open_sources(data: DataConfig) -> dict:
    return build_sources(data, IMAGE_SIZE, SEED)


def batches(data: DataConfig) -> Batches:
    return build_batches(data, VisionConfig(image_size=IMAGE_SIZE), BATCH_SIZE, SEED, tokenize, open_sources(data))


def test_parquet_with_image_bytes_and_several_caption_columns(tmp_path):
    table = pa.table(
        {
            "jpg": [png_bytes((255, 0, 0)), png_bytes((0, 0, 255))],
            "caption": ["a red square", "a blue square"],
            "alt": ["crimson", "navy"],
        }
    )
    pq.write_table(table, tmp_path / "pairs.parquet")
    source = {"kind": "table", "path": str(tmp_path / "pairs.parquet"), "image_column": "jpg"}
    cfg = sources_config(source | {"caption_columns": ["caption", "alt"]})
    batch = batches(cfg)[0]
    assert batch["image"].shape == (8, 3, 16, 16) and batch["counts"] == {}
    seen = {int(t) for t in batch["text"][:, 0]}
    assert seen <= {len("a red square"), len("a blue square"), len("crimson"), len("navy")} and len(seen) > 2
    again = batches(cfg)[0]  # the caption drawn for each visit is seeded
    assert torch.equal(batch["text"], again["text"]) and torch.equal(batch["image"], again["image"])
    first = sources_config(source | {"caption_columns": ["caption", "alt"], "caption_pick": "first"})
    assert {int(t) for t in batches(first)[0]["text"][:, 0]} == {12, 13}


def test_folder_with_txt_and_json_captions(tmp_path):
    Image.new("RGB", (30, 20), (0, 255, 0)).save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("a green rectangle\n")
    Image.new("RGB", (20, 30), (255, 255, 0)).save(tmp_path / "b.jpg")
    (tmp_path / "b.json").write_text(json.dumps({"captions": ["a yellow one", "yellow"]}))
    Image.new("RGB", (20, 20)).save(tmp_path / "no_caption.png")  # not a sample: no caption file
    cfg = sources_config({"kind": "folder", "path": str(tmp_path)})
    (source,) = open_sources(cfg).values()
    assert len(source) == 2
    assert sorted(source.captions(10)) == ["a green rectangle", "a yellow one"]
    assert batches(cfg)[0]["image"].shape == (8, 3, 16, 16)


def test_every_broken_case_is_skipped_and_counted(tmp_path):
    good = png_bytes((10, 200, 10))
    (tmp_path / "good.png").write_bytes(good)
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG not really")
    Image.new("RGB", (64, 64)).save(tmp_path / "huge.png")  # over the 2000-pixel limit below
    (tmp_path / "a_directory.png").mkdir()
    rows = [
        (b"good.png", b"fine"),
        (b"truncated.png", b"cut in half"),
        (b"garbage.png", b"not an image"),
        (b"huge.png", b"too many pixels"),
        (b"a_directory.png", b"unreadable"),
        (b"missing.png", b"no such file"),
        (b"good.png", b"   "),
        (b"good.png", b"caf\xe9 latin-1"),
    ]
    (tmp_path / "pairs.csv").write_bytes(b"image,caption\n" + b"".join(i + b"," + c + b"\n" for i, c in rows))
    cfg = sources_config({"kind": "table", "path": str(tmp_path / "pairs.csv")}, max_image_pixels=2000)
    batch = batches(cfg)[0]  # batch 8 = one epoch of the 8 rows
    assert batch["counts"] == {
        "skipped/bad_image": 2,
        "skipped/too_large": 1,
        "skipped/unreadable_file": 1,
        "skipped/missing_file": 1,
        "skipped/empty_caption": 1,
        "skipped/bad_text": 1,
    }
    assert batch["image"].shape[0] == 1


def test_a_source_that_cannot_be_read_names_itself(tmp_path):
    with pytest.raises(DataError, match="missing.parquet"):
        open_sources(sources_config({"kind": "table", "path": str(tmp_path / "missing.parquet")}))
    (tmp_path / "t.csv").write_text("img,text\nx.png,y\n")
    with pytest.raises(DataError, match="no column 'image'"):
        open_sources(sources_config({"kind": "table", "path": str(tmp_path / "t.csv")}))
    with pytest.raises(DataError, match="no images with a .txt"):
        open_sources(sources_config({"kind": "folder", "path": str(tmp_path)}))
    with pytest.raises(ConfigError, match="needs a path"):
        build_config({}, ["data.sources=[{kind: table}]"])


class Constant(RandomAccessSource):
    def __init__(self, value: int) -> None:
        self.value = value

    size = None

    def describe(self) -> str:
        return "constant"

    def captions(self, n: int) -> list[str]:
        return [str(self.value)] * n

    def get(self, position, rng):
        return np.full((2, 2, 3), self.value, dtype=np.uint8), f"{self.value}:{position}"


def _mixed(seed: int = 0) -> Batches:
    return Batches(
        {"a": Constant(0), "b": Constant(1)}, [3.0, 1.0], lambda t: torch.zeros(len(t), 1), 64, (0,) * 3, (1,) * 3, seed
    )


def test_mixing_follows_the_weights_and_each_stream_continues():
    batches = _mixed()
    taken = {"source/a": 0, "source/b": 0}
    for b in range(200):
        for key, n in batches[b]["counts"].items():
            taken[key] += n
    share = taken["source/a"] / (200 * 64)
    assert abs(share - 0.75) < 4 * np.sqrt(0.75 * 0.25 / (200 * 64))
    # each source's positions continue where its previous batches left off: no gaps, no repeats
    starts = [batches._start(b) for b in range(5)]
    for b in range(4):
        assert (starts[b + 1] - starts[b] == batches._counts(b)).all()


def test_mixed_batches_are_a_pure_function_of_the_index():
    sequential = _mixed()
    for b in range(30):
        sequential[b]
    fresh = _mixed()  # as after a resume at step 29
    a, b = sequential[29], fresh[29]
    assert a["counts"] == b["counts"] and torch.equal(a["image"], b["image"])


@pytest.mark.parametrize("mode", ["shortest", "longest", "squash"])
def test_resize_modes(mode):
    image = Image.new("RGB", (80, 40), (200, 10, 10))
    out = ImageTransform(32, mode)(image)
    assert out.shape == (32, 32, 3)
    corner = out[0, 0].tolist()
    assert corner == ([0, 0, 0] if mode == "longest" else [200, 10, 10])  # longest pads top and bottom


def test_random_crop_is_seeded_by_the_sample():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8))
    transform = ImageTransform(32, random_crop=True, scale=(0.3, 0.6))
    a = transform(image, np.random.default_rng(5))
    assert np.array_equal(a, transform(image, np.random.default_rng(5)))
    assert not np.array_equal(a, transform(image, np.random.default_rng(6)))


def test_the_world_takes_the_random_crop_in_training_only():
    from vislang.data import build_source

    data = DataConfig(random_crop=True, crop_scale=(0.3, 0.5))
    cropped = build_source(data, data.sources[0], 32, 0)
    plain = build_source(data.model_copy(update={"random_crop": False}), data.sources[0], 32, 0)
    held_out = build_source(data, data.sources[0], 32, 0, train=False)
    rng = lambda: np.random.default_rng([0, 303, 7])  # noqa: E731  the loader's per-sample generator
    image, caption = cropped.get(7, rng())
    reference, same_caption = plain.get(7, rng())
    assert image.shape == reference.shape == (32, 32, 3) and caption == same_caption
    assert np.array_equal(image, cropped.get(7, rng())[0])  # a pure function of the position
    assert not np.array_equal(image, reference)  # at most half the scene, resized back: zoomed in
    assert np.array_equal(held_out.get(7, rng())[0], reference)


def test_shuffle_false_reads_the_stored_order_every_epoch(tmp_path):
    captions = [f"caption number {i}" + "!" * i for i in range(5)]  # lengths 16..20 tell them apart
    table = pa.table({"image": [png_bytes((40 * i, 0, 0)) for i in range(5)], "caption": captions})
    pq.write_table(table, tmp_path / "pairs.parquet")
    source = {"kind": "table", "path": str(tmp_path / "pairs.parquet")}
    stored = batches(sources_config(source | {"shuffle": False}))[0]["text"][:, 0].tolist()
    assert stored == [len(captions[i % 5]) for i in range(8)]  # 5 rows, then the second epoch
    shuffled = batches(sources_config(source))[0]["text"][:, 0].tolist()
    assert shuffled[:5] != stored[:5] and sorted(shuffled[:5]) == sorted(stored[:5])
    with pytest.raises(ConfigError, match="contradict"):
        build_config({"data": {"sources": [source | {"shuffle": False, "resampled": True}]}})
