"""Evaluation sets drawn from the world's test split: zero-shot classification, retrieval and
the three ARO-style compositional probes. Each set is plain data (uint8 images, strings and
labels) that the evaluators in ``vislang.eval`` consume; nothing here knows about models.

Index ranges of the test split are disjoint between sets, so no image is reused across tasks.
Every set can be drawn in any of the world's renderings (``rendering``; default: the world's
own): the same scenes, labels and captions, so a set in a shifted rendering differs from the
usual one only in how its images look.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vislang.data.world import COLORS, HOLDOUT, SHAPES, Scene, World, canonical_caption

SHAPE_TEMPLATES = ("a {}", "a photo of a {}", "there is a {}", "a picture of a {}")
COLOR_TEMPLATES = ("a {} object", "something {}", "a photo of a {} object")

# Disjoint index blocks of the test split, one per set.
_BLOCK = 1_000_000
_OFFSETS = {"classify": 0, "unseen": 1, "retrieval": 2, "relation": 3, "attribute": 4, "order": 5}


@dataclass
class ClassificationSet:
    images: np.ndarray  # [N, H, W, 3] uint8
    labels: np.ndarray  # [N] int
    classnames: list[str]
    templates: tuple[str, ...]


@dataclass
class RetrievalSet:
    images: np.ndarray  # [N, H, W, 3]
    texts: list[str]
    text_image: np.ndarray  # [M] index of the image each text describes


@dataclass
class ProbeSet:
    """Each image with K candidate captions; candidate 0 is the true one."""

    images: np.ndarray
    candidates: list[list[str]] = field(default_factory=list)


def _scenes(
    world: World,
    task: str,
    n: int,
    accept,
    n_objects: int | None,
    split: str = "test",
    rendering: str | None = None,
) -> tuple[np.ndarray, list[Scene]]:
    images, scenes = [], []
    index = _OFFSETS[task] * _BLOCK
    while len(scenes) < n:
        rng = world.rng(split, index)
        index += 1
        scene = world.sample_scene(rng, split, n_objects)
        if accept(scene):
            images.append(world.render(scene, rng, rendering))
            scenes.append(scene)
    return np.stack(images), scenes


def classification_sets(
    world: World, n: int, split: str = "test", rendering: str | None = None
) -> dict[str, ClassificationSet]:
    """Shape and colour on one-object images of a split; on the test split also ``*_unseen``,
    only the colour–shape pairs held out of training (the train split has none of them)."""
    sets = {}
    variants = [("", lambda s: True)]
    if split == "test":
        variants.append(("_unseen", lambda s: (s.objects[0].color, s.objects[0].shape) in HOLDOUT))
    for suffix, accept in variants:
        images, scenes = _scenes(world, "unseen" if suffix else "classify", n, accept, 1, split, rendering)
        sets[f"shape{suffix}"] = ClassificationSet(
            images, np.array([SHAPES.index(s.objects[0].shape) for s in scenes]), list(SHAPES), SHAPE_TEMPLATES
        )
        sets[f"color{suffix}"] = ClassificationSet(
            images, np.array([list(COLORS).index(s.objects[0].color) for s in scenes]), list(COLORS), COLOR_TEMPLATES
        )
    return sets


def retrieval_set(world: World, n: int, rendering: str | None = None) -> RetrievalSet:
    """Two-object scenes with their canonical captions: near-unique descriptions, so R@1 is meaningful."""
    images, scenes = _scenes(world, "retrieval", n, lambda s: True, 2, rendering=rendering)
    return RetrievalSet(images, [_caption(world, s) for s in scenes], np.arange(n))


def _caption(world: World, scene: Scene) -> str:
    """The canonical caption in the world's own wording (reading order if it has that option)."""
    return canonical_caption(scene, reading_order=world.reading_order)


def _distinct(scene: Scene) -> bool:
    a, b = scene.objects
    return a.color != b.color and a.shape != b.shape


def _swap_objects(scene: Scene) -> Scene:
    return Scene(scene.objects[::-1], scene.relation)


def _swap_colors(scene: Scene) -> Scene:
    a, b = scene.objects
    return Scene((type(a)(a.shape, b.color, a.size), type(b)(b.shape, a.color, b.size)), scene.relation)


def probe_sets(world: World, n: int, seed: int = 0, rendering: str | None = None) -> dict[str, ProbeSet]:
    """ARO's three probes on two-object test scenes whose objects differ in colour and shape.

    relation: true caption vs the objects swapped around the relation (VG-Relation);
    attribute: true caption vs the colours exchanged between the objects (VG-Attribution);
    order: true caption vs 4 distinct shuffles of its words (COCO-Order, chance 20%).
    """
    sets = {}
    images, scenes = _scenes(world, "relation", n, _distinct, 2, rendering=rendering)
    sets["relation"] = ProbeSet(images, [[_caption(world, s), _caption(world, _swap_objects(s))] for s in scenes])
    images, scenes = _scenes(world, "attribute", n, _distinct, 2, rendering=rendering)
    sets["attribute"] = ProbeSet(images, [[_caption(world, s), _caption(world, _swap_colors(s))] for s in scenes])
    images, scenes = _scenes(world, "order", n, _distinct, 2, rendering=rendering)
    rng = np.random.default_rng([seed, 7])
    candidates = []
    for scene in scenes:
        true = _caption(world, scene)
        words, shuffles = true.split(), []
        while len(shuffles) < 4:
            shuffled = " ".join(words[i] for i in rng.permutation(len(words)))
            if shuffled != true and shuffled not in shuffles:
                shuffles.append(shuffled)
        candidates.append([true, *shuffles])
    sets["order"] = ProbeSet(images, candidates)
    return sets
