"""The world's distribution-shift renderings: ``filled`` is what the world drew before renderings
existed (hashes recorded from the unchanged code), every other rendering draws the same scenes
and captions differently, and the config field, the zero-shot task field and the shipped suites
say so in their metric names."""

from __future__ import annotations

import colorsys
import hashlib

import numpy as np
import pytest
from pydantic import ValidationError

from vislang.config.data import WorldConfig
from vislang.data.world import COLORS, PALETTE_HUE, RENDERINGS, World
from vislang.data.world_tasks import classification_sets, probe_sets, retrieval_set
from vislang.errors import ConfigError
from vislang.eval.suite import read_suite
from vislang.eval.zeroshot import ZeroShotTask
from vislang.experiment import build_config, eval_context

SHIFTS = ("sketch", "textured", "palette")

# Computed with world.py and world_tasks.py as they were before renderings were added (their sha256
# hashes matched then): exact hashes of captions and labels, fingerprints of the images.
BEFORE: dict[str, object] = {
    "samples48": (44.961, 44.928, 45.43, 0.10031),
    "captions": "b2adacafd486ac7ecf42b313861e61598590e6a58448652e209f945a4fbbcc5d",
    "samples64": (45.379, 44.573, 43.518, 0.10828),
    "classify": (35.758, 36.259, 33.318, 0.06478),
    "classify_labels": "07ebf36de16a8ec934d7bccf587a27688177d1aa602cdd6c78e628c1ccad6510",
    "classify_train": (40.675, 36.49, 35.945, 0.05298),
    "retrieval": (57.998, 52.98, 59.551, 0.13113),
    "retrieval_texts": "3db1866b86fd64df4893a3853768458c359d50e365214e5d3712168c37904a0e",
    "probes": (44.63, 47.979, 42.498, 0.10945),
}


def _hash(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _fingerprint(*arrays: np.ndarray) -> tuple[float, ...]:
    """Mean pixel value per channel and the share of bright pixels: a CPU whose float kernels
    round an edge pixel differently moves these by far less than the tolerance below, a changed
    drawing by far more."""
    pixels = np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1, 3) for a in arrays])
    return (*pixels.mean(axis=0).round(3), float((pixels.max(axis=1) > 128).mean().round(5)))


def _text_hash(texts: list[str]) -> str:
    return hashlib.sha256("|".join(texts).encode()).hexdigest()


def _digests(rendering: str | None, configured: str = "filled") -> dict[str, object]:
    """Exact hashes of what is integers and text (captions, labels); fingerprints of the images."""
    world = World(48, seed=0, rendering=configured)
    samples = [world.sample(split, i, rendering) for split in ("train", "test") for i in range(8)]
    other = World(64, seed=3, two_object_prob=0.7, distinct_colors=True, reading_order=True, rendering=configured)
    test = classification_sets(world, 16, rendering=rendering)
    train = classification_sets(world, 16, split="train", rendering=rendering)
    retrieval = retrieval_set(world, 8, rendering=rendering)
    probes = probe_sets(world, 6, rendering=rendering)
    return {
        "samples48": _fingerprint(*[s[0] for s in samples]),
        "captions": _text_hash([s[1] for s in samples]),
        "samples64": _fingerprint(*[other.sample("train", i, rendering)[0] for i in range(8)]),
        "classify": _fingerprint(*[test[k].images for k in sorted(test)]),
        "classify_labels": _hash(*[test[k].labels for k in sorted(test)]),
        "classify_train": _fingerprint(*[train[k].images for k in sorted(train)]),
        "retrieval": _fingerprint(retrieval.images),
        "retrieval_texts": _text_hash(retrieval.texts),
        "probes": _fingerprint(*[probes[k].images for k in sorted(probes)]),
    }


def _same(found: dict, expected: dict) -> bool:
    for key, value in expected.items():
        if isinstance(value, str):
            if found[key] != value:
                return False
        elif not np.allclose(found[key], value, atol=0.05, rtol=0):
            return False
    return set(found) == set(expected)


def test_filled_draws_exactly_what_the_world_drew_before():
    assert _same(_digests(None), BEFORE)  # the default
    assert _same(_digests("filled", configured="sketch"), BEFORE)  # named explicitly


def test_shifted_renderings_are_deterministic_and_differ_from_filled():
    filled = World(48, seed=2)
    for rendering in SHIFTS:
        a, b = World(48, seed=2, rendering=rendering), World(48, seed=2, rendering=rendering)
        for index in (0, 7, 4321):
            image = a.sample("test", index)[0]
            assert image.shape == (48, 48, 3) and image.dtype == np.uint8
            assert np.array_equal(image, b.sample("test", index)[0])
            assert np.array_equal(image, filled.sample("test", index, rendering)[0])
            assert not np.array_equal(image, filled.sample("test", index)[0])
        assert not np.array_equal(a.sample("test", 0)[0], World(48, seed=3, rendering=rendering).sample("test", 0)[0])
    with pytest.raises(ValueError, match="rendering"):
        World(48, rendering="watercolour")


def test_captions_scenes_and_labels_are_the_same_in_every_rendering():
    world = World(32, seed=1)
    for split in ("train", "test"):
        for index in range(150):
            reference = world.sample(split, index)
            for rendering in RENDERINGS:
                assert world.sample(split, index, rendering)[1:] == reference[1:]
    sets = {r: classification_sets(world, 40, rendering=r) for r in RENDERINGS}
    for rendering in SHIFTS:
        assert sets[rendering].keys() == sets["filled"].keys()
        for task, data in sets[rendering].items():
            assert np.array_equal(data.labels, sets["filled"][task].labels)
    texts = retrieval_set(world, 20).texts
    assert all(retrieval_set(world, 20, rendering=r).texts == texts for r in SHIFTS)


def _object_mask(world: World, index: int) -> np.ndarray:
    """The object's pixels in a one-object test image: where the palette shift changes the image."""
    filled = world.sample("test", index, "filled")[0]
    return (world.sample("test", index, "palette")[0] != filled).any(axis=-1)


def _one_object_indices(world: World, count: int, size: str | None = None) -> list[int]:
    found = []
    for i in range(count * 8):
        objects = world.sample("test", i)[2].objects
        if len(objects) == 1 and size in (None, objects[0].size):
            found.append(i)
    return found[:count]


def test_each_shift_changes_only_what_it_names():
    world = World(48, seed=0)
    for index in _one_object_indices(world, 30):
        large = world.sample("test", index)[2].objects[0].size == "large"
        filled, sketch, textured = (world.sample("test", index, r)[0] for r in ("filled", "sketch", "textured"))
        mask = _object_mask(world, index)
        assert mask.sum() > 20
        # textured: the object's pixels are untouched, the background is not
        assert np.array_equal(textured[mask], filled[mask]) and (textured[~mask] != filled[~mask]).any(-1).mean() > 0.5
        # sketch: the background is untouched; inside the object, the outline keeps the object's colour
        assert np.array_equal(sketch[~mask], filled[~mask])
        outline = (sketch[mask] == filled[mask]).all(axis=-1)
        assert 0 < outline.sum() <= mask.sum()
        assert outline.sum() < mask.sum() or not large  # a large object's inside shows the background


def test_sketch_has_far_fewer_object_coloured_pixels():
    world = World(48, seed=0)

    def coloured(rendering: str, size: str | None = None) -> int:
        # pixels far from the image's median colour (the background): the object's
        total = 0
        for index in _one_object_indices(world, 40, size):
            image = world.sample("test", index, rendering)[0].astype(np.float32)
            total += int((np.abs(image - np.median(image, axis=(0, 1))).max(axis=-1) > 60).sum())
        return total

    # the outline is thick enough for a model trained on filled shapes to see some shape (see
    # SKETCH_WIDTH), so small objects keep most of their pixels; large ones lose about a third
    assert coloured("sketch", "large") < 0.75 * coloured("filled", "large")
    assert coloured("sketch") < 0.9 * coloured("filled")


def test_palette_turns_each_colours_hue():
    world = World(48, seed=0)
    turned = []
    for index in _one_object_indices(world, 60):
        obj = world.sample("test", index)[2].objects[0]
        if obj.color == "white":
            continue
        mask = _object_mask(world, index)
        mean = world.sample("test", index, "palette")[0][mask].mean(axis=0) / 255
        hue = colorsys.rgb_to_hsv(*mean)[0] * 360
        named = colorsys.rgb_to_hsv(*(c / 255 for c in COLORS[obj.color]))[0] * 360
        turned.append((hue - named + 180) % 360 - 180)
    assert len(turned) > 20 and abs(np.median(turned) - PALETTE_HUE) < 6


def test_world_config_rendering_field():
    assert WorldConfig().rendering == "filled"
    assert WorldConfig(rendering="sketch").rendering == "sketch"
    with pytest.raises(ValidationError):
        WorldConfig(rendering="watercolour")
    assert build_config({}, ["data.world.rendering=palette"]).data.world.rendering == "palette"
    with pytest.raises(ConfigError, match="rendering"):
        build_config({}, ["data.world.rendering=watercolour"])


def test_zeroshot_rendering_field_and_metric_names(tiny_config):
    assert ZeroShotTask().metric_prefix() == "zeroshot"
    assert ZeroShotTask(rendering="sketch").metric_prefix() == "zeroshot_sketch"
    with pytest.raises(ValidationError, match="dataset: world only"):
        ZeroShotTask(dataset={"format": "imagefolder", "path": "/some/folder"}, rendering="sketch")
    with pytest.raises(ValidationError):
        ZeroShotTask(rendering="watercolour")
    context = eval_context(tiny_config.model_copy(deep=True), tokenizer=None)
    world = context.world()
    plain = ZeroShotTask(n=12).build(context)
    assert [e.name for e in plain] == [
        "zeroshot/shape",
        "zeroshot/color",
        "zeroshot/shape_unseen",
        "zeroshot/color_unseen",
    ]
    expected = classification_sets(world, 12)
    assert np.array_equal(plain[0].data.images.images, expected["shape"].images)
    shifted = ZeroShotTask(n=12, rendering="textured").build(context)
    assert [e.name for e in shifted][:2] == ["zeroshot_textured/shape", "zeroshot_textured/color"]
    textured = classification_sets(world, 12, rendering="textured")
    assert np.array_equal(shifted[1].data.images.images, textured["color"].images)
    assert shifted[1].data.images.key() != plain[1].data.images.key()
    # no rendering named: the world's configured one
    context.world_config = context.world_config.model_copy(update={"rendering": "textured"})
    configured = ZeroShotTask(n=12).build(context)
    assert configured[0].name == "zeroshot/shape"
    assert np.array_equal(configured[0].data.images.images, textured["shape"].images)


def test_shipped_suites_hold_the_shift_tasks(tmp_path):
    shift = read_suite("world_shift")
    assert [(t.type, t.rendering) for t in shift.tasks] == [("zeroshot", r) for r in (None, *SHIFTS)]
    assert [t.metric_prefix() for t in shift.tasks] == ["zeroshot", *(f"zeroshot_{r}" for r in SHIFTS)]
    world = read_suite("world")
    assert {t.rendering for t in world.tasks if t.type == "zeroshot"} == {None, *SHIFTS}
    twice = tmp_path / "twice.yaml"
    twice.write_text("tasks:\n  - {type: zeroshot, rendering: sketch}\n  - {type: zeroshot, rendering: sketch}\n")
    with pytest.raises(ConfigError, match="zeroshot_sketch"):
        read_suite(str(twice))
    folder = tmp_path / "folder.yaml"
    folder.write_text(
        f"tasks:\n  - {{type: zeroshot, dataset: {{format: imagefolder, path: {tmp_path}}}, rendering: sketch}}\n"
    )
    with pytest.raises(ConfigError, match="dataset: world only"):
        read_suite(str(folder))
