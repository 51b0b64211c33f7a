"""Evaluation dataset readers on fixtures written in each format's published layout, checked
against the peers that read the same layouts (torchvision's ImageFolder, CLIP_benchmark's
webdataset builder, CLIP_benchmark's shipped prompt JSON, OpenCLIP's OpenAI templates)."""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vislang.data.benchmark import DATASET_FORMATS, BytesImages, DatasetConfig, dataset_config
from vislang.data.prompts import (
    classname_set,
    read_classnames,
    read_descriptions,
    read_templates,
    template_set,
    template_sets,
    write_descriptions,
)
from vislang.errors import ConfigError, DataError

CLIP_BENCHMARK = Path(__import__("clip_benchmark.datasets", fromlist=["x"]).__file__).parent


def color(i: int) -> tuple[int, int, int]:
    return (i * 37 % 256, i * 91 % 256, i * 13 % 256)


def png(i: int, size=(6, 5)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color(i)).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(path: Path, i: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png(i))
    return path


def pixel(image) -> tuple[int, int, int]:
    return tuple(np.asarray(image)[0, 0])


def read(raw: dict) -> DatasetConfig:
    return dataset_config(raw)


# -- prompts ---------------------------------------------------------------------------------


def test_shipped_templates_and_classnames_are_clip_benchmarks():
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    theirs = json.loads((CLIP_BENCHMARK / "en_zeroshot_classification_templates.json").read_text())
    names = json.loads((CLIP_BENCHMARK / "en_classnames.json").read_text())
    openai = template_set("openai_imagenet")
    assert len(openai) == 80
    assert [t.format(c="dog") for t in openai] == [f("dog") for f in OPENAI_IMAGENET_TEMPLATES]
    assert set(theirs) <= set(template_sets())
    for name, templates in theirs.items():
        assert template_set(name) == templates
    for name, classes in names.items():
        assert classname_set(name) == classes
    assert classname_set("cifar10")[:3] == ["airplane", "automobile", "bird"] and len(classname_set("cifar100")) == 100


def test_unknown_set_names_close_ones():
    with pytest.raises(ConfigError, match="imagenet1k"):
        template_set("imagenet")
    with pytest.raises(ConfigError, match="cifar100"):
        classname_set("cifar_100")


def test_template_and_classname_files(tmp_path):
    (tmp_path / "t.txt").write_text("a photo of a {c}.\nart of the {}.\n\n")
    (tmp_path / "t.json").write_text(json.dumps(["a {c}", "b {c}"]))
    (tmp_path / "c.txt").write_text("cat\ndog\n")
    assert read_templates(tmp_path / "t.txt") == ["a photo of a {c}.", "art of the {}."]
    assert read_templates(tmp_path / "t.json") == ["a {c}", "b {c}"]
    assert read_classnames(tmp_path / "c.txt") == ["cat", "dog"]
    (tmp_path / "bad.txt").write_text("a photo of a {c}.\na photo.\n")
    with pytest.raises(DataError, match=r"bad\.txt line 2.*no \{c\}"):
        read_templates(tmp_path / "bad.txt")
    (tmp_path / "gap.txt").write_text("cat\n\ndog\n")
    with pytest.raises(DataError, match=r"gap\.txt: line 2 is blank"):
        read_classnames(tmp_path / "gap.txt")


def test_descriptions_round_trip_and_bad_files(tmp_path):
    descriptions = {"cat": ["a small furry pet", "whiskers"], "dog": ["a loyal pet"]}
    write_descriptions(descriptions, tmp_path / "d.json")
    assert read_descriptions(tmp_path / "d.json") == descriptions
    cases = {"broken.json": '{"cat": [', "list.json": '["a", "b"]', "nested.json": '{"imagenet1k": {"cat": ["x"]}}',
             "empty_list.json": '{"cat": []}'}  # fmt: skip
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match=name) as error:
            read_descriptions(tmp_path / name)
        assert "\n" not in str(error.value)


# -- imagefolder ------------------------------------------------------------------------------


def make_folder(root: Path) -> None:
    for k, (cls, files) in enumerate(
        {"b_cls": ["z.png", "a.PNG"], "a_cls": ["x.jpg.png", "sub/y.png"], "c_cls": ["q.png"]}.items()
    ):
        for j, name in enumerate(files):
            save_png(root / cls / name, 10 * k + j)
    (root / "a_cls" / "notes.txt").write_text("not an image")


def test_imagefolder_matches_torchvision(tmp_path):
    from torchvision.datasets import ImageFolder

    make_folder(tmp_path / "ds" / "test")
    data = read({"format": "imagefolder", "path": str(tmp_path / "ds")}).read_classification()
    oracle = ImageFolder(str(tmp_path / "ds" / "test"))
    assert [data.images.name(i) for i in range(len(data.images))] == [p for p, _ in oracle.samples]
    assert data.labels.tolist() == oracle.targets
    assert data.classnames == oracle.classes == ["a_cls", "b_cls", "c_cls"]
    assert data.templates == template_set("openai_imagenet") and data.name == "ds"
    assert pixel(data.images.read(0)) == pixel(oracle[0][0])
    small = read({"format": "imagefolder", "path": str(tmp_path / "ds"), "n": 3}).read_classification()
    assert small.labels.tolist() == oracle.targets[:3] and len(small.images) == 3


def test_imagefolder_splits_and_classnames(tmp_path):
    make_folder(tmp_path / "flat")
    cfg = read({"format": "imagefolder", "path": str(tmp_path / "flat"), "split": "val"})
    assert len(cfg.read_classification().images) == 5  # no flat/val: the folder is the one split
    with pytest.raises(DataError, match="flat.*no split folder 'train'"):
        cfg.read_classification("train")
    (tmp_path / "flat" / "classnames.txt").write_text("apple\nbanana\ncherry\n")
    assert cfg.read_classification().classnames == ["apple", "banana", "cherry"]
    (tmp_path / "flat" / "classnames.txt").write_text("apple\nbanana\n")
    with pytest.raises(DataError, match=r"classnames\.txt: 2 class names for the 3 class folders"):
        cfg.read_classification()
    inline = read({"format": "imagefolder", "path": str(tmp_path / "flat"), "classnames": ["x", "y", "z"]})
    assert inline.read_classification().classnames == ["x", "y", "z"]
    (tmp_path / "flat" / "d_empty").mkdir()
    with pytest.raises(DataError, match="d_empty: class folder holds no images"):
        inline.read_classification()
    with pytest.raises(ConfigError, match="no captions"):
        inline.read_retrieval()


# -- manifest ---------------------------------------------------------------------------------


def write_csv(path: Path, rows: list[list], delimiter=",") -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f, delimiter=delimiter).writerows(rows)


def test_manifest_csv_labels(tmp_path):
    for i in range(3):
        save_png(tmp_path / "img" / f"{i}.png", i)
    write_csv(
        tmp_path / "m.csv", [["image", "label"], ["img/2.png", "dog"], ["img/0.png", "cat"], ["img/1.png", "dog"]]
    )
    data = read({"format": "manifest", "path": str(tmp_path / "m.csv")}).read_classification()
    assert data.classnames == ["cat", "dog"] and data.labels.tolist() == [1, 0, 1]
    assert pixel(data.images.read(0)) == color(2)
    write_csv(tmp_path / "i.tsv", [["file_name", "class"], ["img/0.png", "1"], ["img/1.png", "0"]], "\t")
    cfg = read({"format": "manifest", "path": str(tmp_path / "i.tsv"), "classnames": ["a", "b"], "n": 1})
    data = cfg.read_classification()
    assert data.labels.tolist() == [1] and len(data.images) == 1 and data.name == "i"
    write_csv(tmp_path / "range.csv", [["image", "label"], ["img/0.png", "0"], ["img/1.png", "2"]])
    with pytest.raises(DataError, match=r"range\.csv line 3: label 2 is outside the 2 classes"):
        read(
            {"format": "manifest", "path": str(tmp_path / "range.csv"), "classnames": ["a", "b"]}
        ).read_classification()
    write_csv(tmp_path / "gone.csv", [["image", "label"], ["img/0.png", "a"], ["img/9.png", "a"], ["img/8.png", "a"]])
    with pytest.raises(DataError, match=r"gone\.csv: image not found \(line 3\): .*9\.png \(2 of 3 images missing\)"):
        read({"format": "manifest", "path": str(tmp_path / "gone.csv")}).read_classification()
    write_csv(tmp_path / "name.csv", [["image", "label"], ["img/0.png", "a"], ["img/1.png", "zebra"]])
    with pytest.raises(DataError, match=r"name\.csv line 3: label 'zebra'"):
        read({"format": "manifest", "path": str(tmp_path / "name.csv"), "classnames": ["a"]}).read_classification()


def test_manifest_captions_csv_and_parquet(tmp_path):
    for i in range(2):
        save_png(tmp_path / f"{i}.png", i)
    write_csv(tmp_path / "c.csv", [["image", "c1", "c2"], ["1.png", "one", "uno"], ["0.png", "zero", ""]])
    cfg = read({"format": "manifest", "path": str(tmp_path / "c.csv"), "caption_columns": ["c1", "c2"]})
    assert cfg.read_retrieval().captions == [["one", "uno"], ["zero"]]
    table = pa.table({"image": [png(5), png(6)], "captions": [["five", "fünf"], ["six"]], "label": [1, 0]})
    pq.write_table(table, tmp_path / "p.parquet")
    cfg = read({"format": "manifest", "path": str(tmp_path / "p.parquet"), "classnames": ["a", "b"]})
    data = cfg.read_retrieval()
    assert isinstance(data.images, BytesImages) and data.captions == [["five", "fünf"], ["six"]]
    assert pixel(data.images.read(1)) == color(6)
    assert cfg.read_classification().labels.tolist() == [1, 0]
    pq.write_table(pa.table({"image": [png(1), png(2)], "label": [0, 7]}), tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"bad\.parquet row 1: label 7"):
        read({"format": "manifest", "path": str(tmp_path / "bad.parquet"), "classnames": ["a"]}).read_classification()


# -- CLIP_benchmark's webdataset layout ---------------------------------------------------------


def write_shard(path: Path, samples: list[dict[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            key = sample["__key__"]
            for extension, data in sample.items():
                if extension != "__key__":
                    info = tarfile.TarInfo(f"{key.decode()}.{extension}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def make_wds(root: Path, retrieval: bool) -> list:
    (root / "test").mkdir(parents=True)
    expected, index = [], 0
    for shard, count in enumerate((3, 2)):
        samples = []
        for _ in range(count):
            value = [f"caption {index} a", f"caption {index} b"][: 1 + index % 2] if retrieval else (index * 2) % 3
            extension = "webp" if index == 4 else "png"
            image = Image.new("RGB", (7, 4), color(index))
            buffer = io.BytesIO()
            image.save(buffer, format=extension.upper(), lossless=True) if extension == "webp" else image.save(
                buffer, "PNG"
            )
            text = "\n".join(value) if retrieval else str(value)
            samples.append(
                {
                    "__key__": b"s%07d" % index,
                    extension: buffer.getvalue(),
                    "txt" if retrieval else "cls": text.encode(),
                }
            )
            expected.append((value, color(index)))
            index += 1
        write_shard(root / "test" / f"{shard}.tar", samples)
    (root / "test" / "nshards.txt").write_text("2\n")
    if retrieval:
        (root / "dataset_type.txt").write_text("retrieval\n")
    else:
        (root / "classnames.txt").write_text("ant\nbee\ncat\n")
        (root / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\nitap of a {c}.\n")
    return expected


@pytest.mark.filterwarnings("ignore:WebDataset")
def test_clip_benchmark_classification_matches_its_builder(tmp_path):
    from clip_benchmark.datasets.builder import build_dataset

    expected = make_wds(tmp_path / "wds", retrieval=False)
    oracle = build_dataset("wds/mine", root=str(tmp_path / "wds"), split="test", task="zeroshot_classification")
    theirs = [(label, pixel(image)) for image, label in oracle]
    data = read({"format": "clip_benchmark", "path": str(tmp_path / "wds")}).read_classification()
    ours = [(int(label), pixel(data.images.read(i))) for i, label in enumerate(data.labels)]
    assert ours == theirs == expected
    assert data.classnames == oracle.classes and data.templates == oracle.templates
    restored = pickle.loads(pickle.dumps(data.images))  # loader workers get a pickled copy
    assert pixel(restored.read(4)) == color(4)
    small = read({"format": "clip_benchmark", "path": str(tmp_path / "wds"), "n": 4}).read_classification()
    assert small.labels.tolist() == [label for label, _ in expected[:4]]
    with pytest.raises(ConfigError, match="classification dataset.*cannot be read for retrieval"):
        read({"format": "clip_benchmark", "path": str(tmp_path / "wds")}).read_retrieval()


@pytest.mark.filterwarnings("ignore:WebDataset")
def test_clip_benchmark_retrieval_matches_its_builder(tmp_path):
    from clip_benchmark.datasets.builder import build_dataset

    expected = make_wds(tmp_path / "wds", retrieval=True)
    oracle = build_dataset("wds/mine", root=str(tmp_path / "wds"), split="test", task="zeroshot_retrieval")
    theirs = [(captions, pixel(image)) for image, captions in oracle]
    data = read({"format": "clip_benchmark", "path": str(tmp_path / "wds")}).read_retrieval()
    assert [(c, pixel(data.images.read(i))) for i, c in enumerate(data.captions)] == theirs == expected


def test_clip_benchmark_bad_shards(tmp_path):
    make_wds(tmp_path / "wds", retrieval=False)
    cfg = read({"format": "clip_benchmark", "path": str(tmp_path / "wds")})
    shard = tmp_path / "wds" / "test" / "1.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[:700])  # cut inside the first member
    with pytest.raises(DataError, match=r"malformed shard .*1\.tar"):
        cfg.read_classification()
    shard.write_bytes(data[:1024])  # cut between two members: a shorter shard that looks whole
    with pytest.raises(DataError, match=r"malformed shard .*1\.tar: no end-of-archive block after s0000003\.png"):
        cfg.read_classification()
    shard.write_bytes(b"x" * 1024)
    with pytest.raises(DataError, match=r"malformed shard .*1\.tar"):
        cfg.read_classification()
    (tmp_path / "wds" / "classnames.txt").write_text("ant\n")
    shard.write_bytes(data)
    with pytest.raises(
        DataError, match=r"0\.tar:s0000001\.png: label 2 is outside the 1 class names of .*classnames\.txt"
    ):
        cfg.read_classification()
    with pytest.raises(DataError, match="no split folder 'train'"):
        cfg.read_classification("train")


# -- CIFAR ------------------------------------------------------------------------------------


def cifar_batch(path: Path, rng: np.random.Generator, count: int, labels: dict[str, list[int]]) -> np.ndarray:
    data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
    path.write_bytes(pickle.dumps({"batch_label": "x", "data": data, "filenames": ["f"] * count, **labels}, protocol=2))
    return data


def test_cifar10_batches(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    train = [cifar_batch(root / f"data_batch_{i}", rng, 2, {"labels": [i % 10, 9]}) for i in range(1, 6)]
    test = cifar_batch(root / "test_batch", rng, 3, {"labels": [3, 1, 4]})
    names = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (root / "batches.meta").write_bytes(pickle.dumps({"label_names": names, "num_cases_per_batch": 2}, protocol=2))
    data = read({"format": "cifar", "path": str(tmp_path)}).read_classification()
    assert data.labels.tolist() == [3, 1, 4] and data.classnames == classname_set("cifar10")
    assert data.templates == template_set("cifar10")
    image = data.images.read(2)
    assert image.size == (32, 32) and image.mode == "RGB"
    assert np.array_equal(np.asarray(image)[..., 1], test[2, 1024:2048].reshape(32, 32))  # green plane
    tr = read(
        {"format": "cifar", "path": str(root), "split": "train", "classnames": "file", "n": 3}
    ).read_classification()
    assert tr.classnames == names and tr.labels.tolist() == [1, 9, 2]
    assert np.array_equal(np.asarray(tr.images.read(2))[..., 0], train[1][0, :1024].reshape(32, 32))
    with pytest.raises(ConfigError, match="train and test, not 'val'"):
        read({"format": "cifar", "path": str(root), "split": "val"}).read_classification()
    with pytest.raises(ConfigError, match="coarse is for CIFAR-100"):
        read({"format": "cifar", "path": str(root), "labels": "coarse"}).read_classification()


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar100_labels_and_unsafe_pickle(tmp_path):
    rng = np.random.default_rng(1)
    cifar_batch(tmp_path / "test", rng, 2, {"fine_labels": [99, 0], "coarse_labels": [19, 4]})
    coarse = [f"super_{i}" for i in range(20)]
    meta = {"fine_label_names": classname_set("cifar100"), "coarse_label_names": coarse}
    (tmp_path / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    fine = read({"format": "cifar", "path": str(tmp_path)}).read_classification()
    assert fine.labels.tolist() == [99, 0] and fine.templates == template_set("cifar100")
    data = read({"format": "cifar", "path": str(tmp_path), "labels": "coarse"}).read_classification()
    assert data.labels.tolist() == [19, 4] and data.classnames == coarse
    with pytest.raises(DataError, match=r"classnames: 3 class names for the 100 fine classes"):
        read({"format": "cifar", "path": str(tmp_path), "classnames": ["a", "b", "c"]}).read_classification()
    (tmp_path / "test").write_bytes(pickle.dumps({"data": _Evil()}))
    with pytest.raises(DataError, match=r"test: not a CIFAR pickle.*refusing to load"):
        read({"format": "cifar", "path": str(tmp_path)}).read_classification()


# -- Karpathy splits ----------------------------------------------------------------------------


def test_karpathy_coco_and_flickr(tmp_path):
    def entry(split, name, folder=None, captions=("a", "b")):
        item = {"filename": name, "split": split, "sentences": [{"raw": c, "tokens": c.split()} for c in captions]}
        return item | ({"filepath": folder} if folder else {})

    coco = {"images": [entry("train", "t.jpg", "train2014"), entry("test", "b.jpg", "val2014", ["B one", "B two"]),
                       entry("restval", "r.jpg", "val2014"), entry("test", "a.jpg", "val2014", ["A"])]}  # fmt: skip
    (tmp_path / "dataset_coco.json").write_text(json.dumps(coco))
    for folder, name in [("val2014", "b.jpg"), ("val2014", "a.jpg"), ("val2014", "r.jpg")]:
        save_png(tmp_path / "coco" / folder / name, 1)
    cfg = read({"format": "karpathy", "path": str(tmp_path / "dataset_coco.json"), "images": str(tmp_path / "coco")})
    data = cfg.read_retrieval()
    assert data.captions == [["B one", "B two"], ["A"]] and data.name == "dataset_coco"
    assert data.images.name(1) == str(tmp_path / "coco" / "val2014" / "a.jpg")
    assert len(cfg.read_retrieval("restval").captions) == 1
    with pytest.raises(DataError, match=r"image not found: .*t\.jpg \(1 of 1 images missing\)"):
        cfg.read_retrieval("train")
    flickr = {"images": [entry("test", f"{i}.jpg", captions=[f"c{i}"]) for i in range(3)]}
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps(flickr))
    for i in range(3):
        save_png(tmp_path / f"{i}.jpg", i)
    data = read({"format": "karpathy", "path": str(tmp_path / "dataset_flickr30k.json"), "n": 2}).read_retrieval()
    assert data.captions == [["c0"], ["c1"]]
    with pytest.raises(ConfigError, match="no class labels"):
        cfg.read_classification()


# -- the config sections ------------------------------------------------------------------------


def test_dataset_config_errors_and_resolve(tmp_path):
    assert set(DATASET_FORMATS) == {"imagefolder", "manifest", "clip_benchmark", "cifar", "karpathy"}
    with pytest.raises(ConfigError, match="unknown dataset format 'coco'.*imagefolder, manifest"):
        dataset_config({"format": "coco", "path": "x"})
    with pytest.raises(ConfigError, match="needs descriptions"):
        dataset_config({"format": "imagefolder", "path": "x", "prompts": "both"})
    with pytest.raises(ConfigError, match="unknown config key 'colour'"):
        dataset_config({"format": "imagefolder", "path": "x", "colour": 1})
    with pytest.raises(ConfigError, match="templates.*no \\{c\\}"):
        dataset_config({"format": "imagefolder", "path": "x", "templates": ["a photo"]})
    raw = {"format": "manifest", "path": "m.csv", "images": "img", "templates": "cifar10", "classnames": "names.txt"}
    resolved = dataset_config(raw).resolve(tmp_path)
    assert resolved.path == str(tmp_path / "m.csv") and resolved.images == str(tmp_path / "img")
    assert resolved.classnames == str(tmp_path / "names.txt") and resolved.templates == "cifar10"
    assert dataset_config({"format": "cifar", "path": "/d/cifar-10-batches-py", "name": "c10"}).label() == "c10"


def test_descriptions_make_the_prompts(tmp_path):
    make_folder(tmp_path / "ds")
    write_descriptions({"a_cls": ["an A"], "b_cls": ["a B", "bee"], "c_cls": ["a C"]}, tmp_path / "d.json")
    raw = {"format": "imagefolder", "path": "ds", "descriptions": "d.json", "prompts": "both", "templates": ["x {c}"]}
    data = dataset_config(raw).resolve(tmp_path).read_classification()
    assert data.class_prompts()[1] == ["x b_cls", "a B", "bee"]
    write_descriptions({"a_cls": ["an A"]}, tmp_path / "d.json")
    with pytest.raises(DataError, match=r"d\.json: no descriptions for class 'b_cls' \(2 of 3"):
        dataset_config(raw).resolve(tmp_path).read_classification()
