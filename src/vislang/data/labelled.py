"""Labelled images as a training source: classification data for fine-tuning.

A labelled source reads any evaluation dataset that has class labels (ImageFolder, manifests,
CLIP_benchmark shards, CIFAR; see :mod:`vislang.data.benchmark`), or the built-in world's
one-object scenes labelled by shape or colour. Its samples are ``(image, label)``; the batch
builder writes each image's caption as a prompt of its class (FLYP), drawing one template per
class per batch, so images of one class in a batch share one prompt, and passes the labels on
(``label``) for cross-entropy heads and for losses that must not treat same-class pairs as
negatives.

Sample ``p`` is a pure function of ``p`` (epochs of seeded permutations, as tables and folders),
so a fine-tune resumes exactly like any other run.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BeforeValidator, Field, SerializeAsAny, field_validator, model_validator

from vislang.classes import ClassTask
from vislang.config import DataConfig, SourceConfig
from vislang.config.base import Section
from vislang.data.benchmark import DatasetConfig
from vislang.data.benchmark.base import Classification
from vislang.data.benchmark.config import dataset_section
from vislang.data.decode import open_image
from vislang.data.samples import RowOrder
from vislang.data.source import RandomAccessSource
from vislang.data.transforms import ImageTransform
from vislang.data.world import COLORS, SHAPES, World
from vislang.data.world_tasks import COLOR_TEMPLATES, SHAPE_TEMPLATES
from vislang.errors import DataError

WORLD_CLASSES = {"shape": (SHAPES, SHAPE_TEMPLATES), "color": (tuple(COLORS), COLOR_TEMPLATES)}


class LabelledSourceConfig(Section):
    """A training source of labelled images (``kind: labelled``)."""

    kind: Literal["labelled"] = Field(description="labelled images: classification data as training data")
    dataset: Literal["world"] | SerializeAsAny[DatasetConfig] = Field(
        description="world: the built-in world's one-object train scenes (data.world, its rendering included); "
        "or a labelled dataset in an evaluation format ({format: imagefolder, path: ...}; its split defaults to "
        "train here); its templates write the captions"
    )
    world_task: Literal["shape", "color"] = Field("shape", description="dataset world: what the label is")
    name: str | None = Field(None, description="name in the per-source counts of the logs (default: labelled)")
    weight: float = Field(1.0, gt=0, allow_inf_nan=False, description="kept for symmetry: one labelled source only")
    resampled: bool = Field(False, description="endless sampling with replacement instead of epochs")
    shuffle: bool = Field(True, description="a fresh seeded permutation every epoch; false reads the stored order")

    labelled: ClassVar[bool] = True
    path: ClassVar[None] = None  # what other sources' messages name

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset(cls, value: Any) -> Any:
        if isinstance(value, dict) and "split" not in value:  # training reads the train split unless told
            value = {**value, "split": "train"}
        return value if value == "world" else dataset_section(value, "a labelled source", "classifies")

    def label(self, index: int, alone: bool) -> str:
        return self.name or ("labelled" if alone else f"labelled{index}")


def _source(value: Any) -> Any:
    if isinstance(value, dict) and value.get("kind") == "labelled":
        return LabelledSourceConfig.model_validate(value)
    return SourceConfig.model_validate(value) if isinstance(value, dict) else value


# One training source: a labelled one by its kind, else the captioned kinds of SourceConfig.
SourceEntry = Annotated[SerializeAsAny[SourceConfig | LabelledSourceConfig], BeforeValidator(_source)]


class TrainingDataConfig(DataConfig):
    """The ``data`` section of a run: :class:`DataConfig` whose sources may be labelled."""

    sources: list[SourceEntry] = Field(
        [SourceConfig()],
        min_length=1,
        description="the training sources: captioned (world, table, folder, shards) or one labelled source "
        "(kind: labelled, for fine-tuning)",
    )

    @model_validator(mode="after")
    def _one_labelled(self) -> TrainingDataConfig:
        labelled = [s for s in self.sources if isinstance(s, LabelledSourceConfig)]
        if labelled and len(self.sources) > 1:
            raise ValueError("a labelled source is the run's only source (its classes are the task)")
        if labelled and (self.hard_negatives or self.cit is not None):
            raise ValueError("a labelled source's captions are class prompts: no hard_negatives or cit with it")
        with_labels = [getattr(s, "label_column", None) is not None for s in self.sources]
        if any(with_labels) and not all(with_labels):
            raise ValueError("a batch carries labels from every source or none: give each source a label_column")
        return self

    def labelled(self) -> bool:
        """Whether the run trains on labelled images (batches carry ``label``)."""
        return isinstance(self.sources[0], LabelledSourceConfig)

    def carries_labels(self) -> bool:
        """Whether batches carry ``label``: a labelled source, or tables with a ``label_column``."""
        return self.labelled() or getattr(self.sources[0], "label_column", None) is not None


class LabelledSource(RandomAccessSource):
    """Base of labelled sources: ``get`` returns ``(image uint8 [S, S, 3], label)`` and
    ``classes`` says what the labels mean."""

    labelled: ClassVar[bool] = True
    classes: ClassTask

    def captions(self, n: int) -> list[str]:
        """Class prompts for a tokenizer: every class before any class repeats, templates in turn."""
        c, t = len(self.classes), len(self.classes.templates)
        return [self.classes.prompt(i % c, (i // c) % t) for i in range(n)]


class LabelledSamples(LabelledSource):
    """A :class:`Classification` read from files, visited in epochs of seeded permutations. An
    image that does not decode is skipped and counted (``skipped/bad_image``), as training does."""

    def __init__(
        self,
        data: Classification,
        transform: ImageTransform,
        max_pixels: int,
        seed: int,
        resampled: bool,
        shuffle: bool,
    ) -> None:
        self.data, self.transform, self.max_pixels = data, transform, max_pixels
        self.order = RowOrder(len(data.labels), seed, resampled, shuffle)
        self.classes = ClassTask(tuple(data.classnames), tuple(data.templates), data.name)

    @property
    def size(self) -> int:
        return self.order.n

    def describe(self) -> str:
        return f"{self.order.n} labelled images of {len(self.classes)} classes ({self.data.name})"

    def get(self, position: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        row = self.order.row(position)
        stored = self.data.images.encoded(row)
        # decoded as every training source decodes: data.max_image_pixels, skip reasons counted
        image = open_image(stored, self.max_pixels) if stored is not None else self.data.images.read(row)
        return self.transform(image, rng), int(self.data.labels[row])


class WorldLabelled(LabelledSource):
    """The world's one-object train scenes labelled by shape or colour: sample ``p`` is a fresh
    scene drawn from position ``p`` (endless, like the world itself). The train split holds none
    of the held-out colour-shape pairs, so ``zeroshot/*_unseen`` stays a test of generalisation."""

    def __init__(self, world: World, task: str) -> None:
        self.world, self.task = world, task
        names, templates = WORLD_CLASSES[task]
        self.classes = ClassTask(tuple(names), tuple(templates), f"world_{task}")

    @property
    def size(self) -> None:
        return None

    def describe(self) -> str:
        return f"procedural, one object, labelled by {self.task}, {self.world.rendering}"

    def get(self, position: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        scene_rng = self.world.rng("train", position)
        scene = self.world.sample_scene(scene_rng, "train", 1)
        obj = scene.objects[0]
        label = SHAPES.index(obj.shape) if self.task == "shape" else list(COLORS).index(obj.color)
        return self.world.render(scene, scene_rng), label


def build_labelled(
    config: LabelledSourceConfig, world: World, transform: ImageTransform, max_pixels: int, seed: int
) -> LabelledSource:
    """The source a labelled config names (its dataset read now: file errors are one line)."""
    if config.dataset == "world":
        return WorldLabelled(world, config.world_task)
    data = config.dataset.read_classification()
    if not len(data.labels):
        raise DataError(f"dataset {config.dataset.label()}: no labelled images")
    return LabelledSamples(data, transform, max_pixels, seed, config.resampled, config.shuffle)


def prompt_choice(seed: int, batch: int, label: int, templates: int) -> int:
    """The template that writes class ``label``'s prompt in batch ``batch``: one per class and
    batch, the same on every rank (the global batch has one prompt per class)."""
    return int(np.random.default_rng([seed, 405, batch, label]).integers(templates))
