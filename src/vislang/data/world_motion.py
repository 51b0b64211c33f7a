"""The built-in world in motion: T-frame clips in which one object moves across the frame.

Why it exists: a model that pools frame features by their mean cannot tell a clip from the same
clip played backwards, and the set of frames of "a red circle moves to the left" is exactly the
set of frames of some clip of it moving to the right. So the direction of motion is learnable
only by a model that sees frame order, which makes this world the end-to-end check of temporal
pooling (the world_video suite's temporal probe).

Every clip is a pure function of ``(seed, split, index)``, drawn from its own stream (not the
still world's samples). The object's identity (shape, colour and size: its *subject*) stays
fixed through a clip; the train split never holds the world's ``HOLDOUT`` colour-shape pairs.
The evaluation sets come from disjoint index blocks of the test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vislang.data.source import RandomAccessSource
from vislang.data.world import COLORS, RADIUS, SHAPES, SIZES, SPLITS, World, WorldObject, shape_mask
from vislang.data.world_tasks import RetrievalSet

# Direction -> (unit step in x, in y; y points down) and the phrase captions use.
DIRECTIONS: dict[str, tuple[tuple[int, int], str]] = {
    "left": ((-1, 0), "to the left"),
    "right": ((1, 0), "to the right"),
    "up": ((0, -1), "up"),
    "down": ((0, 1), "down"),
}
SUBJECTS = len(SHAPES) * len(COLORS) * len(SIZES)  # distinct objects (shape, colour, size)
TRAVEL = (0.3, 0.5)  # distance travelled in a clip, as a fraction of the image side (capped by room)
_MOTION_KEY = 0x30710  # a stream key the still world's samples never use
_BLOCK = 1_000_000
_OFFSETS = {"retrieval": 10, "subject": 11, "temporal": 12}

_TEMPLATES = (
    "a {size} {color} {shape} moves {dir}",
    "a {color} {shape} moves {dir}",
    "a {color} {shape} moving {dir}",
    "a video of a {size} {color} {shape} moving {dir}",
)
# Partial captions; "an object moves ..." names only the direction, which teaches it on its own.
_PARTIAL_TEMPLATES = (
    "a {shape} moves {dir}",
    "something {color} moves {dir}",
    "an object moves {dir}",
    "a {size} {shape} moving {dir}",
)


@dataclass(frozen=True)
class MotionClip:
    frames: np.ndarray  # [T, S, S, 3] uint8
    caption: str  # a random paraphrase
    subject: WorldObject
    direction: str


def motion_caption(subject: WorldObject, direction: str) -> str:
    """The one fixed wording of a clip (retrieval and the temporal probe)."""
    return f"a {subject.describe()} moves {DIRECTIONS[direction][1]}"


class MotionWorld:
    """Clips of ``frames`` frames drawn with the still ``world``'s objects, colours and sizes."""

    def __init__(self, world: World, frames: int = 8) -> None:
        if frames < 2:
            raise ValueError(f"a motion clip needs at least 2 frames, got {frames}")
        self.world, self.frames = world, frames

    def rng(self, split: str, index: int) -> np.random.Generator:
        return np.random.default_rng([self.world.seed, SPLITS[split], index, _MOTION_KEY])

    def sample(self, split: str, index: int) -> MotionClip:
        rng = self.rng(split, index)
        subject = self.world.sample_object(rng, split)
        direction = list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
        return MotionClip(
            self.render(subject, direction, rng), self.caption(subject, direction, rng), subject, direction
        )

    def caption(self, subject: WorldObject, direction: str, rng: np.random.Generator) -> str:
        partial = rng.random() < self.world.partial_caption_prob
        templates = _PARTIAL_TEMPLATES if partial else _TEMPLATES
        template = templates[rng.integers(len(templates))]
        return template.format(
            shape=subject.shape, color=subject.color, size=subject.size, dir=DIRECTIONS[direction][1]
        )

    def render(self, subject: WorldObject, direction: str, rng: np.random.Generator) -> np.ndarray:
        """The clip [T, S, S, 3]: a fixed noisy background, the object moving in a straight line
        at constant speed along ``direction``, staying wholly inside the frame."""
        size, w = self.world.draw_size, self.world  # drawn at the world's draw size, then resized
        base = (rng.uniform(5, 60) + rng.uniform(-10, 10, size=3)).astype(np.float32)
        background = rng.standard_normal((size, size, 3), dtype=np.float32) * 6.0 + base
        radius = min(size * rng.uniform(*RADIUS[subject.size]), size / 4 - 1.5)
        room = size - 2 * (1.3 * radius + 1)  # where the centre may go, every shape within 1.3 radii
        travel = min(rng.uniform(*TRAVEL) * size, room)
        (dx, dy), _ = DIRECTIONS[direction]
        low = 1.3 * radius + 1
        along0 = low + rng.uniform(0, max(0.0, room - travel))  # start on the main axis, moving forward
        across = low + rng.uniform(0, room)
        angle = rng.uniform(-0.2, 0.2)
        cos, sin = np.cos(angle), np.sin(angle)
        color = np.asarray(COLORS[subject.color], dtype=np.float32) + rng.uniform(-12, 12, size=3)
        side = w.image_size
        clip = np.empty((self.frames, side, side, 3), dtype=np.uint8)
        for t in range(self.frames):
            along = along0 + travel * t / (self.frames - 1)
            pos = along if dx > 0 or dy > 0 else size - along  # left and up run mirrored
            cx, cy = (pos, across) if dx else (across, pos)
            u0, v0 = (w._xx - cx) / radius, (w._yy - cy) / radius
            image = background.copy()
            image[shape_mask(subject.shape, cos * u0 + sin * v0, -sin * u0 + cos * v0)] = color
            clip[t] = w.to_image_size(np.clip(image, 0, 255).astype(np.uint8))
        return clip

    def clip_of(self, subject: WorldObject, split: str, index: int) -> MotionClip:
        """A clip of a given subject (random direction and path) from stream ``index``."""
        rng = self.rng(split, index)
        direction = list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
        return MotionClip(self.render(subject, direction, rng), motion_caption(subject, direction), subject, direction)


class MotionSamples(RandomAccessSource):
    """The motion world's train split as a training source: sample ``p`` is clip ``p``."""

    def __init__(self, motion: MotionWorld) -> None:
        self.motion = motion

    @property
    def size(self) -> None:
        return None

    def describe(self) -> str:
        return f"procedural motion clips of {self.motion.frames} frames"

    def get(self, position: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        clip = self.motion.sample("train", position)
        return clip.frames, clip.caption

    def captions(self, n: int) -> list[str]:
        return [self.motion.sample("train", i).caption for i in range(n)]


def motion_retrieval_set(motion: MotionWorld, n: int) -> RetrievalSet:
    """Test clips with their fixed captions, each caption once (a repeated caption would have
    several right answers), up to ``n`` of them."""
    clips, texts, index = [], [], _OFFSETS["retrieval"] * _BLOCK
    seen: set[str] = set()
    limit = index + 200 * n
    while len(clips) < n and index < limit:
        clip = motion.sample("test", index)
        index += 1
        text = motion_caption(clip.subject, clip.direction)
        if text not in seen:
            seen.add(text)
            clips.append(clip.frames)
            texts.append(text)
    return RetrievalSet(np.stack(clips), texts, np.arange(len(clips)))


def subject_set(motion: MotionWorld, n_subjects: int, per_subject: int) -> tuple[np.ndarray, np.ndarray]:
    """``per_subject`` clips (own direction and path each) of ``n_subjects`` distinct test
    subjects: (clips [N, T, S, S, 3], subject id [N])."""
    if not 1 <= n_subjects <= SUBJECTS:
        raise ValueError(f"the motion world has {SUBJECTS} subjects, asked for {n_subjects}")
    rng = np.random.default_rng([motion.world.seed, _OFFSETS["subject"]])
    subjects: list[WorldObject] = []
    while len(subjects) < n_subjects:
        subject = motion.world.sample_object(rng, "test")
        if subject not in subjects:
            subjects.append(subject)
    base = _OFFSETS["subject"] * _BLOCK
    clips = [
        motion.clip_of(subject, "test", base + g * per_subject + k).frames
        for g, subject in enumerate(subjects)
        for k in range(per_subject)
    ]
    return np.stack(clips), np.repeat(np.arange(n_subjects), per_subject)


def temporal_set(motion: MotionWorld, n: int) -> tuple[np.ndarray, list[str]]:
    """``n`` test clips with their fixed captions (direction included): the temporal probe's items."""
    base = _OFFSETS["temporal"] * _BLOCK
    clips = [motion.sample("test", base + i) for i in range(n)]
    return np.stack([c.frames for c in clips]), [motion_caption(c.subject, c.direction) for c in clips]
