"""The built-in world: determinism, split disjointness, captions and probe construction."""

from __future__ import annotations

import hashlib

import numpy as np

from vislang.data.world import COLORS, HOLDOUT, SHAPES, SIZES, World, canonical_caption
from vislang.data.world_tasks import classification_sets, probe_sets, retrieval_set


def _digest(image: np.ndarray) -> str:
    return hashlib.sha1(image.tobytes()).hexdigest()


def test_inventory_is_as_specified():
    assert len(SHAPES) >= 6 and len(COLORS) >= 8 and len(SIZES) == 2
    assert len(HOLDOUT) == len(COLORS) and {shape for _, shape in HOLDOUT} == set(SHAPES)


def test_samples_are_deterministic_across_instances():
    a, b = World(64, seed=3), World(64, seed=3)
    for index in (0, 5, 12345):
        image_a, caption_a, scene_a = a.sample("train", index)
        image_b, caption_b, scene_b = b.sample("train", index)
        assert np.array_equal(image_a, image_b) and caption_a == caption_b and scene_a == scene_b
    assert not np.array_equal(World(64, seed=4).sample("train", 0)[0], a.sample("train", 0)[0])


def test_images_have_requested_size_and_vary():
    world = World(48)
    images = [world.sample("train", i)[0] for i in range(20)]
    assert all(im.shape == (48, 48, 3) and im.dtype == np.uint8 for im in images)
    assert len({_digest(im) for im in images}) == 20


def test_train_split_never_draws_holdout_and_test_does():
    world = World(32)
    train = [world.sample("train", i)[2] for i in range(3000)]
    assert not any((o.color, o.shape) in HOLDOUT for s in train for o in s.objects)
    test = [world.sample("test", i)[2] for i in range(3000)]
    assert any((o.color, o.shape) in HOLDOUT for s in test for o in s.objects)


def test_splits_are_disjoint():
    world = World(32)
    train = {_digest(world.sample("train", i)[0]) for i in range(2000)}
    test = {_digest(world.sample("test", i)[0]) for i in range(2000)}
    assert not train & test


def test_captions_name_the_objects():
    world = World(32)
    for i in range(300):
        _, caption, scene = world.sample("train", i)
        words = caption.split()
        # full captions name colour and shape of every object, partial ones one of the two
        for obj in scene.objects:
            assert obj.shape in words or obj.color in words
        if len(scene.objects) == 2:
            named = [w for w in words if w in SHAPES] or [w for w in words if w in COLORS]
            assert len(named) == 2


def test_two_object_layout_matches_relation():
    # Render each object alone by colour: object 0 must lie on the named side of object 1.
    world = World(64)
    checked = 0
    for i in range(400):
        rng = world.rng("test", i)
        scene = world.sample_scene(rng, "test", 2)
        a, b = scene.objects
        if a.color == b.color:
            continue
        image = world.render(scene, rng).astype(int)
        centres = []
        for obj in scene.objects:
            mask = (np.abs(image - np.array(COLORS[obj.color])) <= 14).all(axis=-1)
            ys, xs = np.nonzero(mask)
            centres.append((xs.mean(), ys.mean()))
        (x0, y0), (x1, y1) = centres
        expected = {"left": x0 < x1, "right": x0 > x1, "above": y0 < y1, "below": y0 > y1}[scene.relation]
        assert expected, (i, scene)
        checked += 1
    assert checked > 300


def test_reading_order_names_the_left_or_upper_object_first():
    world = World(32, two_object_prob=1.0, distinct_colors=True, reading_order=True)
    for i in range(200):
        rng = world.rng("train", i)
        scene = world.sample_scene(rng, "train")
        world.render(scene, rng)
        caption = world.caption(scene, rng)
        first = 0 if scene.relation in ("left", "above") else 1
        assert "right" not in caption and "below" not in caption
        named = [w for w in caption.split() if w in COLORS or w in SHAPES]
        assert named[0] in (scene.objects[first].color, scene.objects[first].shape), (caption, scene)
    # the probes speak the same wording; the relation swap still exchanges the objects
    relation = probe_sets(world, 30)["relation"]
    for true, swapped in relation.candidates:
        assert "right" not in true + swapped and "below" not in true + swapped
        assert true != swapped and sorted(true.split()) == sorted(swapped.split())


def test_stream_is_unchanged_by_later_options():
    # The stream as it was before reading_order existed: options that are off must not move any
    # draw, or every earlier result (the demo's figures) would shift.
    world, digest = World(32, seed=3), hashlib.sha1()
    for i in range(20):
        image, caption, _ = world.sample("train", i)
        digest.update(image.tobytes())
        digest.update(caption.encode())
    assert digest.hexdigest() == "e04fc761a3f49d41dd3d4cd864c50ba27f0f3a80"


def test_eval_sets_have_the_right_form():
    world = World(32)
    sets = classification_sets(world, 30)
    assert set(sets) == {"shape", "color", "shape_unseen", "color_unseen"}
    unseen = sets["shape_unseen"]
    assert all((list(COLORS)[c], SHAPES[s]) in HOLDOUT for s, c in zip(unseen.labels, sets["color_unseen"].labels))
    retrieval = retrieval_set(world, 50)
    assert len(retrieval.images) == len(retrieval.texts) == 50
    assert len(set(retrieval.texts)) > 45  # near-unique captions make R@1 meaningful

    probes = probe_sets(world, 40)
    for name, k in (("relation", 2), ("attribute", 2), ("order", 5)):
        probe = probes[name]
        assert len(probe.images) == 40
        for candidates in probe.candidates:
            assert len(candidates) == k and len(set(candidates)) == k
            assert sorted(candidates[0].split()) == sorted(candidates[1].split()) or name == "attribute"
    # attribute swap exchanges colours only: the shapes stay where they were
    for true, false in probes["attribute"].candidates:
        t, f = true.split(), false.split()
        assert [w for w in t if w in SHAPES] == [w for w in f if w in SHAPES]
        assert [w for w in t if w in COLORS] == [w for w in f if w in COLORS][::-1]


def test_canonical_caption():
    world = World(32)
    scene = world.sample_scene(world.rng("test", 0), "test", 2)
    caption = canonical_caption(scene)
    assert caption.startswith(f"a {scene.objects[0].size} {scene.objects[0].color} {scene.objects[0].shape}")


def test_render_size_draws_once_and_resizes_like_a_photo():
    from PIL import Image

    from vislang.config import DataConfig
    from vislang.data import build_world
    from vislang.data.world_motion import MotionWorld

    source = World(96, seed=2)
    for side in (32, 48, 96):
        world = build_world(DataConfig.model_validate({"world": {"seed": 2, "render_size": 96}}).world, side)
        for index in (0, 7):
            image, caption, scene = world.sample("train", index)
            big, big_caption, big_scene = source.sample("train", index)
            expected = np.asarray(Image.fromarray(big).resize((side, side), Image.Resampling.BICUBIC))
            # the same picture at every size, and the same caption (the draws do not depend on the size)
            assert np.array_equal(image, expected) and caption == big_caption and scene == big_scene
    clip = MotionWorld(World(32, seed=2, render_size=64), 4).sample("train", 0)
    big_clip = MotionWorld(World(64, seed=2), 4).sample("train", 0)
    assert clip.frames.shape == (4, 32, 32, 3) and clip.caption == big_clip.caption
    frame = np.asarray(Image.fromarray(big_clip.frames[2]).resize((32, 32), Image.Resampling.BICUBIC))
    assert np.array_equal(clip.frames[2], frame)


def test_render_size_below_the_smallest_image_is_refused():
    import pytest

    from vislang.config import DataConfig

    with pytest.raises(ValueError, match="render_size must be 0 or at least 16"):
        DataConfig.model_validate({"world": {"render_size": 8}})
    with pytest.raises(ValueError, match="render_size must be 0 or at least 16"):
        World(32, render_size=8)
