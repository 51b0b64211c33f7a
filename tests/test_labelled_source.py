"""Labelled images as a training source (``data.sources: [{kind: labelled, ...}]``), each property
against what the test computes itself: an ImageFolder's labels are the sorted index of each image's
folder, a corrupt image is skipped and counted, every epoch visits every image once; a batch's
captions are its classes' prompts with prompt_choice's template (one per class and batch), batch b
is a pure function of b and two ranks split it without sharing a sample; the world's labelled
scenes are world.rng("train", p)'s scene and never a held-out colour-shape pair; and the configs
a labelled source cannot train are refused with one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY
from vislang.data import build_batches, build_sources, build_world, labelled_batches, tokenizer_corpus
from vislang.data.labelled import LabelledSamples, WorldLabelled, prompt_choice
from vislang.data.world import COLORS, HOLDOUT, SHAPES
from vislang.errors import ConfigError
from vislang.experiment import build_config

# folder -> images in it; created in this order, labelled in sorted order (ant 0, moth 1, zebra 2)
FOLDERS = {"zebra": 3, "ant": 4, "moth": 2}
CORRUPT = "moth/broken.png"


class PromptIndex:
    """A tokenizer that writes each caption as its index among the class prompts, so a batch's
    captions can be read back exactly (a caption that is no class prompt fails the test)."""

    def __init__(self, classes) -> None:
        self.prompts = [p for row in classes.prompts() for p in row]

    def __call__(self, captions) -> torch.Tensor:
        return torch.tensor([[self.prompts.index(c)] for c in captions])

    def captions(self, tokens: torch.Tensor) -> list[str]:
        return [self.prompts[int(t[0])] for t in tokens]


def _colour(folder: str, k: int) -> tuple[int, int, int]:
    """Image k of a folder: a flat colour no other image has."""
    return 20 + 90 * sorted(FOLDERS).index(folder), 30 + 45 * k, 200 - 40 * k


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "folder"
    for folder, n in FOLDERS.items():
        (root / "train" / folder).mkdir(parents=True)
        for k in range(n):
            Image.new("RGB", (40, 30), _colour(folder, k)).save(root / "train" / folder / f"{k}.png")
    (root / "train" / CORRUPT).write_bytes(b"\x89PNG\r\n\x1a\n not an image at all")
    (root / "train" / "ant" / "notes.txt").write_text("not an image file: ignored")
    return root


def _config(dataset, *overrides: str, **fields):
    raw = {"data": {"sources": [{"kind": "labelled", "dataset": dataset, **fields}]}}
    return build_config(raw, TINY + ["eval.tasks=[]", *overrides])


def _folder_source(root):
    cfg = _config({"format": "imagefolder", "path": str(root), "split": "train"})
    sources = build_sources(cfg.data, cfg.model.vision.image_size, cfg.train.seed)
    assert list(sources) == ["labelled"]
    return cfg, sources


def _which_image(image: torch.Tensor, mean, std) -> tuple[str, int]:
    """(folder, k) of a normalised [3, S, S] image, by its flat colour."""
    pixel = image.mean(dim=(1, 2)).numpy() * np.asarray(std) + np.asarray(mean)
    known = {(f, k): np.asarray(_colour(f, k)) / 255 for f, n in FOLDERS.items() for k in range(n)}
    found, distance = min(((key, np.abs(pixel - c).max()) for key, c in known.items()), key=lambda x: x[1])
    assert distance < 0.02, f"an image of no known colour: {pixel}"
    return found


def test_an_image_folder_source_labels_each_image_by_its_folder_and_skips_the_corrupt_one(image_folder):
    cfg, sources = _folder_source(image_folder)
    source = sources["labelled"]
    assert isinstance(source, LabelledSamples)
    assert source.classes.classnames == ("ant", "moth", "zebra")
    assert source.size == sum(FOLDERS.values()) + 1  # the corrupt file is a row, found unusable when read
    v = cfg.model.vision
    good = {(f, k) for f, n in FOLDERS.items() for k in range(n)}
    batch_size = 5  # two batches per epoch of 10 rows
    batches = build_batches(cfg.data, v, batch_size, cfg.train.seed, PromptIndex(source.classes), sources)
    orders = []
    for epoch in range(3):
        seen, skipped = [], 0
        for b in (2 * epoch, 2 * epoch + 1):
            batch = batches[b]
            skipped += batch["counts"].get("skipped/bad_image", 0)
            assert set(batch["counts"]) <= {"skipped/bad_image"}
            assert len(batch["image"]) == len(batch["label"]) == len(batch["text"])
            for image, label in zip(batch["image"], batch["label"]):
                folder, k = _which_image(image, v.image_mean, v.image_std)
                assert int(label) == sorted(FOLDERS).index(folder), (folder, k)
                seen.append((folder, k))
        assert skipped == 1, f"epoch {epoch}"
        assert sorted(seen) == sorted(good), f"epoch {epoch}: every image once"
        orders.append(seen)
    assert orders[0] != orders[1] or orders[1] != orders[2]  # a fresh permutation every epoch

    # what a probe fitted before fine-tuning sees: the first epoch's usable images, in order
    images, labels = zip(*labelled_batches(source, v.image_mean, v.image_std, 100, 4))
    assert [len(x) for x in labels] == [4, 4, 1]
    first = [_which_image(x, v.image_mean, v.image_std) for x in torch.cat(images)]
    assert sorted(first) == sorted(good)
    assert torch.cat(labels).tolist() == [sorted(FOLDERS).index(f) for f, _ in first]


def _world_source(task: str = "shape", *overrides: str):
    cfg = _config("world", *overrides, world_task=task)
    return cfg, build_sources(cfg.data, cfg.model.vision.image_size, cfg.train.seed)


def test_captions_are_the_class_prompts_of_prompt_choice_one_template_per_class_and_batch():
    cfg, sources = _world_source("shape")
    source = sources["labelled"]
    classes = source.classes
    assert classes.classnames == SHAPES and len(classes.templates) > 1
    tokenizer = PromptIndex(classes)
    batches = build_batches(cfg.data, cfg.model.vision, 24, cfg.train.seed, tokenizer, sources)
    used = set()
    for b in range(8):
        batch = batches[b]
        captions, labels = tokenizer.captions(batch["text"]), batch["label"].tolist()
        assert len(set(labels)) < len(labels)  # classes repeat within the batch
        for caption, label in zip(captions, labels):
            template = prompt_choice(cfg.train.seed, b, label, len(classes.templates))
            assert caption == classes.templates[template].format(SHAPES[label]), (b, label)
            used.add((label, template))
        for label in set(labels):  # one prompt per class in the batch
            assert len({c for c, y in zip(captions, labels) if y == label}) == 1
    assert len({t for _, t in used}) > 1  # the template does change between batches


def test_batch_b_is_a_pure_function_of_b_and_two_ranks_split_it_without_sharing_a_sample(monkeypatch):
    cfg, sources = _world_source("color")
    source = sources["labelled"]
    tokenizer = PromptIndex(source.classes)
    v, seed, size = cfg.model.vision, cfg.train.seed, 8

    in_order = build_batches(cfg.data, v, size, seed, tokenizer, sources)
    for b in range(5):
        in_order[b]
    later, fresh = in_order[5], build_batches(cfg.data, v, size, seed, tokenizer, sources)[5]
    for key in ("image", "text", "label"):
        assert torch.equal(later[key], fresh[key]), key

    read: list[int] = []
    real_get = source.get
    monkeypatch.setattr(source, "get", lambda p, rng: read.append(p) or real_get(p, rng))
    ranks = [build_batches(cfg.data, v, size, seed, tokenizer, sources, rank=r, world=2) for r in (0, 1)]
    whole = build_batches(cfg.data, v, 2 * size, seed, tokenizer, sources)
    for b in (0, 3, 7):
        parts = []
        for rank in ranks:
            read.clear()
            parts.append(rank[b])
            parts[-1]["positions"] = list(read)
        first, second = parts
        assert not set(first["positions"]) & set(second["positions"])
        assert sorted(first["positions"] + second["positions"]) == list(range(2 * size * b, 2 * size * (b + 1)))
        images = torch.cat([first["image"], second["image"]])
        assert len({x.numpy().tobytes() for x in images}) == len(images)  # no scene twice
        prompts = {}
        for part in parts:
            for caption, label in zip(tokenizer.captions(part["text"]), part["label"].tolist()):
                assert prompts.setdefault(label, caption) == caption, (b, label)  # one template across ranks
        # the two ranks' parts are the one-process batch of twice the size, split in two
        single = whole[b]
        for key in ("image", "text", "label"):
            assert torch.equal(torch.cat([first[key], second[key]]), single[key]), (b, key)


def test_world_labels_are_the_scene_of_its_train_rng_and_no_held_out_pair_is_ever_drawn():
    cfg, shapes = _world_source("shape")
    _, colours = _world_source("color")
    world = build_world(cfg.data.world, cfg.model.vision.image_size)
    assert isinstance(shapes["labelled"], WorldLabelled)
    assert colours["labelled"].classes.classnames == tuple(COLORS)
    for p in (0, 1, 17, 12345):
        rng = world.rng("train", p)
        scene = world.sample_scene(rng, "train", 1)
        expected = world.render(scene, rng)
        (obj,) = scene.objects
        for sources, label in ((shapes, SHAPES.index(obj.shape)), (colours, list(COLORS).index(obj.color))):
            image, got = sources["labelled"].get(p, np.random.default_rng(0))
            assert got == label and np.array_equal(image, expected), p

    # the train stream: batch b of the two sources holds the same scenes, so their labels pair up
    v, seed = cfg.model.vision, cfg.train.seed
    by_shape = build_batches(cfg.data, v, 64, seed, PromptIndex(shapes["labelled"].classes), shapes)
    by_colour = build_batches(cfg.data, v, 64, seed, PromptIndex(colours["labelled"].classes), colours)
    pairs = set()
    for b in range(20):
        s, c = by_shape[b], by_colour[b]
        assert torch.equal(s["image"], c["image"])
        pairs |= {(list(COLORS)[j], SHAPES[i]) for i, j in zip(s["label"].tolist(), c["label"].tolist())}
    assert not pairs & HOLDOUT
    assert len(pairs) == len(SHAPES) * len(COLORS) - len(HOLDOUT)  # every other pair does occur


@pytest.mark.parametrize(
    "raw, overrides, message",
    [
        ({"sources": [{"kind": "labelled", "dataset": "world"}, {"kind": "world"}]}, [], "only source"),
        ({"sources": [{"kind": "world"}, {"kind": "labelled", "dataset": "world"}]}, [], "only source"),
        (
            {"sources": [{"kind": "labelled", "dataset": "world"}], "hard_negatives": ["attribute"]},
            [],
            "no hard_negatives",
        ),
        ({}, ["objective=flyp"], "the flyp objective trains on labelled images"),
        ({}, ["objective=classifier"], "the classifier objective trains on labelled images"),
        ({}, ["objective=coop"], "the coop objective trains on labelled images"),
        ({"sources": [{"kind": "world"}]}, ["objective=classifier"], "trains on labelled images"),
        (
            {"sources": [{"kind": "labelled", "dataset": {"format": "karpathy", "path": "dataset_coco.json"}}]},
            [],
            "karpathy datasets have no class labels",
        ),
    ],
)
def test_what_a_labelled_source_cannot_train_is_refused_with_one_line(raw, overrides, message):
    with pytest.raises(ConfigError, match=message) as refused:
        build_config({"data": raw} if raw else {}, TINY + ["eval.tasks=[]", *overrides])
    assert "\n" not in str(refused.value)


def test_a_labelled_source_trains_the_objectives_that_need_labels():
    for kind in ("flyp", "classifier"):
        cfg = build_config(
            {"data": {"sources": [{"kind": "labelled", "dataset": "world"}]}}, TINY + [f"objective={kind}"]
        )
        assert cfg.data.labelled() and cfg.objective.kind == kind


def test_a_labelled_source_skips_images_over_max_image_pixels_as_training_does(image_folder):
    Image.new("RGB", (100, 100), (0, 0, 0)).save(image_folder / "train" / "ant" / "big.png")
    cfg = _config({"format": "imagefolder", "path": str(image_folder), "split": "train"}, "data.max_image_pixels=5000")
    sources = build_sources(cfg.data, cfg.model.vision.image_size, cfg.train.seed)
    rows = sum(FOLDERS.values()) + 2
    batch = build_batches(cfg.data, cfg.model.vision, rows, 0, PromptIndex(sources["labelled"].classes), sources)[0]
    assert batch["counts"] == {"skipped/bad_image": 1, "skipped/too_large": 1}  # 100 x 100 > 5000 pixels


def test_the_tokenizer_corpus_of_a_labelled_source_names_every_class():
    _, sources = _world_source("shape")
    corpus = tokenizer_corpus(sources, 2 * len(SHAPES))  # fewer texts than the 6 x 4 prompts
    assert all(any(shape in text for text in corpus) for shape in SHAPES)


def test_a_labelled_dataset_reads_its_train_split_unless_told():
    from vislang.data.labelled import LabelledSourceConfig

    implicit = LabelledSourceConfig.model_validate(
        {"kind": "labelled", "dataset": {"format": "imagefolder", "path": "x"}}
    )
    told = LabelledSourceConfig.model_validate(
        {"kind": "labelled", "dataset": {"format": "imagefolder", "path": "x", "split": "val"}}
    )
    assert (implicit.dataset.split, told.dataset.split) == ("train", "val")
