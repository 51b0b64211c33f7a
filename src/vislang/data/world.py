"""The built-in compositional world: a seeded, procedural source of image–caption pairs.

Why it exists: it lets every part of vislang (losses, loop, evaluators, probes) be trained and
checked end to end on a laptop, with no files, on a task whose structure is known exactly —
which shapes, colours and sizes are present and how two objects are placed relative to each
other. That structure is what the compositional probes (relation swap, attribute swap, word
order) test, in the form ARO uses on real data.

Every sample is a pure function of ``(seed, split, index)``: the stream can be resumed at any
index and regenerated bit for bit in any process. The train split never contains the
``HOLDOUT`` colour–shape combinations; the test split does, so zero-shot accuracy on them
measures compositional generalisation rather than memorisation.

A scene can be drawn in four renderings (``RENDERINGS``), the built-in distribution shifts: the
same scenes, positions and captions, drawn as filled shapes (the usual domain), as outlines only
(``sketch``, in the spirit of ImageNet-Sketch), on a striped and blotchy background
(``textured``), or with every named colour hue-rotated and dimmed (``palette``). They draw the
same numbers from a sample's stream as ``filled`` does, so captions do not depend on the
rendering; what only one rendering needs (the texture) comes from a stream derived from the
sample's seed, so ``filled`` stays what it was before renderings existed.

By default a scene is drawn at the asked image size, pixel-sharp, so the same scene at 32 and at
48 px are two drawings. With ``render_size`` it is drawn once at that side and resized to the
image size, as a photo is: the world is then a collection of pictures, and a model evaluated at
another image size sees the same pictures resized (docs/resolution.md measures the difference).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import get_args

import numpy as np
from PIL import Image

from vislang.config.data import Rendering

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "star")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (40, 185, 60),
    "blue": (45, 85, 235),
    "yellow": (235, 225, 45),
    "purple": (150, 55, 205),
    "orange": (250, 140, 25),
    "white": (240, 240, 240),
    "cyan": (40, 215, 225),
}
SIZES: tuple[str, ...] = ("small", "large")
# Object radius as a fraction of the image side, drawn uniformly from the range of its size.
# Smaller objects (radius 0.09-0.12) were measured too small to tell a square from a circle at
# 48 px: the demo model's shape accuracy on them was 0.57 against 0.76 on large ones.
RADIUS: dict[str, tuple[float, float]] = {"small": (0.12, 0.15), "large": (0.18, 0.22)}
# Relation of object 0 to object 1, the phrase used in captions, and its converse.
RELATIONS: dict[str, tuple[str, str]] = {
    "left": ("to the left of", "right"),
    "right": ("to the right of", "left"),
    "above": ("above", "below"),
    "below": ("below", "above"),
}
# Colour–shape pairs never drawn in the train split (one per colour, every shape at least once).
HOLDOUT: frozenset[tuple[str, str]] = frozenset((color, SHAPES[i % len(SHAPES)]) for i, color in enumerate(COLORS))
SPLITS: dict[str, int] = {"train": 0, "test": 1}
RENDERINGS: tuple[str, ...] = get_args(Rendering)

# Strength of each shift. A shift must stay a shift: a model trained on filled shapes should
# neither master it nor be left at chance (measure the demo model on the world_shift suite after
# any change). Sketch outlines of 2 px at 48 left the demo model's shape accuracy at chance
# (0.16); 4 px gave it back its colour accuracy (0.99); 3 px gave shape 0.26, colour 0.94.
SKETCH_WIDTH = 0.07  # outline width as a fraction of the image side (at least 1 px): 3 px at 48
TEXTURE_CONTRAST = 70.0  # peak added brightness of the background's stripes and of its blobs
TEXTURE_BLOBS = 6
PALETTE_HUE = 25.0  # degrees every named colour's hue is turned by
PALETTE_VALUE = 0.8  # and the factor on its brightness (white becomes a light grey)
# A stream key no sample's own stream uses: the texture's numbers come from (sample seed, this key).
_TEXTURE_KEY = 0x7E87

_SINGLE_TEMPLATES = (
    "a {size} {color} {shape}",
    "a {color} {shape}",
    "a photo of a {size} {color} {shape}",
    "a {color} {shape} on a dark background",
    "there is a {color} {shape}",
    "a picture of a {size} {color} {shape}",
)
# Partial descriptions, as real captions often are; they also make the zero-shot prompts
# ("a circle", "a red object") in-distribution for the text tower.
_PARTIAL_TEMPLATES = (
    "a {shape}",
    "a photo of a {shape}",
    "a {color} object",
    "something {color}",
    "a {size} {shape}",
)
_PAIR_TEMPLATES = (
    "a {a} {rel} a {b}",
    "a {a} is {rel} a {b}",
    "there is a {a} {rel} a {b}",
    "a photo of a {a} {rel} a {b}",
)


@dataclass(frozen=True)
class WorldObject:
    shape: str
    color: str
    size: str

    def describe(self, with_size: bool = True) -> str:
        return f"{self.size} {self.color} {self.shape}" if with_size else f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """One or two objects; with two, ``relation`` says where object 0 is relative to object 1."""

    objects: tuple[WorldObject, ...]
    relation: str | None = None


def canonical_caption(scene: Scene, with_size: bool = True, reading_order: bool = False) -> str:
    """The one fixed wording of a scene, used for retrieval and the probes; ``reading_order``
    names the left (or upper) object first, as a world with that option words its captions."""
    a = scene.objects[0].describe(with_size)
    if len(scene.objects) == 1:
        return f"a {a}"
    b = scene.objects[1].describe(with_size)
    relation = scene.relation
    if reading_order and relation in ("right", "below"):
        a, b, relation = b, a, RELATIONS[relation][1]
    return f"a {a} {RELATIONS[relation][0]} a {b}"


class World:
    """Samples scenes, renders them and writes captions for them.

    ``image_size`` is the side in pixels; ``two_object_prob`` the share of two-object scenes;
    ``partial_caption_prob`` the share of one-object captions that name only some attributes;
    ``distinct_colors`` makes the two objects of a scene always differ in colour (the study
    variant: colour is learned within a minute, so relation binding can be learned on top of it);
    ``reading_order`` makes two-object captions name the left (or upper) object first, so that
    only "to the left of" and "above" occur. Without it either wording is drawn ("a red circle
    to the left of a blue square" or "a blue square to the right of a red circle"), and which
    object a caption names first says nothing about where it is. ``render_size`` (0: the image
    size) is the side scenes are drawn at before they are resized to ``image_size``.
    """

    def __init__(
        self,
        image_size: int = 64,
        seed: int = 0,
        two_object_prob: float = 0.5,
        partial_caption_prob: float = 0.2,
        distinct_colors: bool = False,
        reading_order: bool = False,
        rendering: str = "filled",
        render_size: int = 0,
    ) -> None:
        if image_size < 16:
            raise ValueError(f"world image_size must be at least 16, got {image_size}")
        if render_size and render_size < 16:
            raise ValueError(f"world render_size must be 0 or at least 16, got {render_size}")
        self.rendering = _check_rendering(rendering)
        self.image_size = image_size
        self.seed = seed
        self.two_object_prob = two_object_prob
        self.partial_caption_prob = partial_caption_prob
        self.distinct_colors = distinct_colors
        self.reading_order = reading_order
        self.draw_size = render_size or image_size  # the side scenes are drawn at
        coords = np.arange(self.draw_size, dtype=np.float32) + 0.5
        self._yy, self._xx = np.meshgrid(coords, coords, indexing="ij")

    # -- sampling ---------------------------------------------------------------------------
    def rng(self, split: str, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, SPLITS[split], index])

    def sample_object(self, rng: np.random.Generator, split: str) -> WorldObject:
        while True:
            shape = SHAPES[rng.integers(len(SHAPES))]
            color = list(COLORS)[rng.integers(len(COLORS))]
            if split != "train" or (color, shape) not in HOLDOUT:
                return WorldObject(shape, color, SIZES[rng.integers(len(SIZES))])

    def sample_scene(self, rng: np.random.Generator, split: str, n_objects: int | None = None) -> Scene:
        if n_objects is None:
            n_objects = 2 if rng.random() < self.two_object_prob else 1
        objects = [self.sample_object(rng, split) for _ in range(n_objects)]
        while self.distinct_colors and n_objects == 2 and objects[1].color == objects[0].color:
            objects[1] = self.sample_object(rng, split)
        objects = tuple(objects)
        relation = list(RELATIONS)[rng.integers(len(RELATIONS))] if n_objects == 2 else None
        return Scene(objects, relation)

    def sample(self, split: str, index: int, rendering: str | None = None) -> tuple[np.ndarray, str, Scene]:
        """Sample ``index`` of ``split``: (uint8 image HxWx3, a random paraphrase, the scene),
        drawn in ``rendering`` (default: the world's own); the caption is the same in every one."""
        rng = self.rng(split, index)
        scene = self.sample_scene(rng, split)
        return self.render(scene, rng, rendering), self.caption(scene, rng), scene

    # -- captions ---------------------------------------------------------------------------
    def caption(self, scene: Scene, rng: np.random.Generator) -> str:
        if len(scene.objects) == 1:
            obj = scene.objects[0]
            partial = rng.random() < self.partial_caption_prob
            templates = _PARTIAL_TEMPLATES if partial else _SINGLE_TEMPLATES
            template = templates[rng.integers(len(templates))]
            return template.format(shape=obj.shape, color=obj.color, size=obj.size)
        with_size = bool(rng.random() < 0.5)
        a, b = (o.describe(with_size) for o in scene.objects)
        if rng.random() < self.partial_caption_prob:  # name the objects by shape or by colour only
            if rng.random() < 0.5:
                a, b = (o.shape for o in scene.objects)
            else:
                a, b = (f"{o.color} object" for o in scene.objects)
        phrase, converse = RELATIONS[scene.relation]
        # The converse wording says the same thing; in reading order it is the one that names
        # the left (upper) object first, otherwise it is drawn half of the time.
        converse_wording = scene.relation in ("right", "below") if self.reading_order else rng.random() < 0.5
        if converse_wording:
            a, b, phrase = b, a, RELATIONS[converse][0]
        template = _PAIR_TEMPLATES[rng.integers(len(_PAIR_TEMPLATES))]
        return template.format(a=a, b=b, rel=phrase)

    # -- rendering --------------------------------------------------------------------------
    def render(self, scene: Scene, rng: np.random.Generator, rendering: str | None = None) -> np.ndarray:
        """The scene as a uint8 image in ``rendering`` (default: the world's own). Every rendering
        draws the same numbers from ``rng``, so what is drawn from it afterwards (the caption)
        does not depend on the rendering."""
        rendering = self.rendering if rendering is None else _check_rendering(rendering)
        size = self.draw_size
        base = (rng.uniform(5, 60) + rng.uniform(-10, 10, size=3)).astype(np.float32)
        image = rng.standard_normal((size, size, 3), dtype=np.float32) * 6.0 + base
        if rendering == "textured":
            image += self._texture(_derived_rng(rng, _TEXTURE_KEY))
        palette = PALETTE if rendering == "palette" else COLORS
        width = max(1, round(SKETCH_WIDTH * size))
        # Two objects must fit side by side in the two halves of the image (see _place).
        radii = [min(size * rng.uniform(*RADIUS[o.size]), size / 4 - 1.5) for o in scene.objects]
        centers = self._place(scene, radii, rng)
        for obj, radius, (cx, cy) in zip(scene.objects, radii, centers):
            angle = rng.uniform(-0.2, 0.2)
            cos, sin = np.cos(angle), np.sin(angle)
            # Every shape lies within 1.3 radii of its centre: draw in that window only.
            reach = 1.3 * radius + 1
            rows = slice(max(0, int(cy - reach)), min(size, int(cy + reach) + 1))
            cols = slice(max(0, int(cx - reach)), min(size, int(cx + reach) + 1))
            u0, v0 = (self._xx[rows, cols] - cx) / radius, (self._yy[rows, cols] - cy) / radius
            u, v = cos * u0 + sin * v0, -sin * u0 + cos * v0
            color = np.asarray(palette[obj.color], dtype=np.float32) + rng.uniform(-12, 12, size=3)
            mask = shape_mask(obj.shape, u, v)
            if rendering == "sketch":
                mask = _outline(mask, width)
            image[rows, cols][mask] = color
        return self.to_image_size(np.clip(image, 0, 255).astype(np.uint8))

    def to_image_size(self, image: np.ndarray) -> np.ndarray:
        """A uint8 image drawn at ``draw_size`` resized to ``image_size`` (PIL's bicubic, which
        filters when it shrinks, as photo pipelines resize); unchanged when the two agree."""
        if self.draw_size == self.image_size:
            return image
        side = self.image_size
        return np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BICUBIC))

    def _texture(self, rng: np.random.Generator) -> np.ndarray:
        """Background clutter to add to the plain background: a stripe pattern of random
        direction, period and colour, and a few soft blobs of random colours."""
        size = self.draw_size
        angle, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        period = size * rng.uniform(0.08, 0.2)
        along = (self._xx * np.cos(angle) + self._yy * np.sin(angle)) * (2 * np.pi / period)
        stripes = (0.5 + 0.5 * np.sin(along + phase))[..., None]
        texture = stripes * rng.uniform(0, TEXTURE_CONTRAST, size=3).astype(np.float32)
        for _ in range(TEXTURE_BLOBS):
            cx, cy = rng.uniform(0, size, size=2)
            sigma = size * rng.uniform(0.04, 0.12)
            blob = np.exp(-((self._xx - cx) ** 2 + (self._yy - cy) ** 2) / (2 * sigma * sigma))
            texture += blob[..., None] * rng.uniform(0, TEXTURE_CONTRAST, size=3).astype(np.float32)
        return texture.astype(np.float32)

    def _place(self, scene: Scene, radii: list[float], rng: np.random.Generator) -> list[tuple[float, float]]:
        size, margin = self.draw_size, 1.0
        if len(radii) == 1:
            r = radii[0]
            return [(rng.uniform(r + margin, size - r - margin), rng.uniform(r + margin, size - r - margin))]
        # Object 0 goes in the half its relation names, object 1 in the other half; the other
        # coordinate stays close so that the relation is unambiguous.
        r0, r1 = radii
        half = size / 2
        first = (rng.uniform(r0 + margin, half - r0 - margin), rng.uniform(r0 + margin, size - r0 - margin))
        lo = max(r1 + margin, first[1] - 0.2 * size)
        hi = min(size - r1 - margin, first[1] + 0.2 * size)
        second = (rng.uniform(half + r1 + margin, size - r1 - margin), rng.uniform(lo, max(lo, hi)))
        near, far = first, second  # near = smaller main coordinate
        if scene.relation in ("right", "below"):
            pos0, pos1 = far, near
        else:
            pos0, pos1 = near, far
        if scene.relation in ("above", "below"):  # swap axes: main coordinate is y
            pos0, pos1 = (pos0[1], pos0[0]), (pos1[1], pos1[0])
        return [pos0, pos1]


def _check_rendering(rendering: str) -> str:
    if rendering not in RENDERINGS:
        raise ValueError(f"world rendering must be one of {', '.join(RENDERINGS)}, got {rendering!r}")
    return rendering


def _shifted(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """``rgb`` with its hue turned by PALETTE_HUE and its brightness scaled by PALETTE_VALUE."""
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    r, g, b = colorsys.hsv_to_rgb((h + PALETTE_HUE / 360) % 1.0, s, v * PALETTE_VALUE)
    return round(r * 255), round(g * 255), round(b * 255)


# The ``palette`` rendering's colour for each colour name.
PALETTE: dict[str, tuple[int, int, int]] = {name: _shifted(rgb) for name, rgb in COLORS.items()}


def _derived_rng(rng: np.random.Generator, key: int) -> np.random.Generator:
    """A second stream fixed by the seed of ``rng`` (the sample's) and ``key``, made without
    drawing from ``rng``: a rendering's extra randomness leaves the sample's own stream alone."""
    seed = rng.bit_generator.seed_seq
    return np.random.default_rng(np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, key)))


def _outline(mask: np.ndarray, width: int) -> np.ndarray:
    """The pixels of ``mask`` within ``width`` pixels (4-neighbour steps) of its edge; outside
    the window counts as outside the shape."""
    inner = mask.copy()
    for _ in range(width):
        shrunk = inner.copy()
        shrunk[1:] &= inner[:-1]
        shrunk[:-1] &= inner[1:]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        shrunk[[0, -1]] = False
        shrunk[:, [0, -1]] = False
        inner = shrunk
    return mask & ~inner


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of ``shape`` in object coordinates (unit radius, v pointing down)."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "triangle":
        return (v <= 0.75) & (np.abs(u) <= (v + 1.0) * 0.55)
    if shape == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1.0))
    if shape == "star":
        radius = np.sqrt(u * u + v * v)
        theta = np.arctan2(v, u) + np.pi / 2
        return radius <= 0.4 + 0.6 * ((1.0 + np.cos(5 * theta)) / 2) ** 2
    raise ValueError(f"unknown shape {shape!r}")
