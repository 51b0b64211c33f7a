"""Zero-shot classification, computed as CLIP_benchmark computes it: each class's prompts
(templates filled with its name, its own descriptions, or both) are encoded and normalised, the
class prototype is their normalised mean, and an image's logits are 100 × its cosine with every
prototype. Metrics: top-1, top-5 (five classes or more) and mean per-class recall.

A captioner runs through the same evaluator: its "prototype" is the class's prompt tokens, and
a class scores by the mean log-likelihood of its prompts given the image.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, SerializeAsAny, field_validator, model_validator

from vislang.config.data import Rendering
from vislang.data.benchmark import ArrayImages, Classification, DatasetConfig, dataset_section
from vislang.data.prompts import read_descriptions
from vislang.data.world_tasks import classification_sets
from vislang.eval.metrics import TIES, classification_metrics
from vislang.eval.tasks import EvalContext, Evaluator, TaskConfig
from vislang.objectives import Objective
from vislang.objectives.contrastive import EmbeddingObjective

Ties = Literal["clip_benchmark", "expected"]
TIES_DESCRIPTION = (
    "how tied scores rank: clip_benchmark (torch.topk's order, CLIP_benchmark's numbers exactly) or expected "
    "(a tie shares the credit, the expected value of a random tie-break)"
)


WorldSet = Literal["shape", "color", "shape_unseen", "color_unseen"]


class LabelledTaskConfig(TaskConfig):
    """What the tasks that classify labelled images share (zero-shot prompts, the objective's own
    head): the world's test scenes or a dataset, how many images, the tie rule, and for the world
    a shifted rendering (metrics ``<name>_<rendering>/...``)."""

    metric_name: ClassVar[str]

    dataset: Literal["world"] | SerializeAsAny[DatasetConfig] = Field(
        "world",
        description="world: the built-in world's tasks (shape, colour, ...) on its test split; or a dataset "
        "{format: imagefolder | manifest | clip_benchmark | cifar, path: ..., split: ...}",
    )
    n: int | None = Field(
        None,
        ge=1,
        description="test images per task (the world: default 1000; a dataset: default all of it, else n spread "
        "evenly over it)",
    )
    ties: Ties = Field("clip_benchmark", description=TIES_DESCRIPTION)
    rendering: Rendering | None = Field(
        None,
        description="dataset world only: draw its test images as filled | sketch | textured | palette (the "
        "same scenes; metrics <task type>_<rendering>/...); default: the world's own rendering",
    )

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset(cls, value: Any) -> Any:
        return dataset_section(value, f"the {cls.metric_name} task", "classifies")

    @model_validator(mode="after")
    def _rendering_needs_world(self) -> LabelledTaskConfig:
        if self.rendering is not None and self.dataset != "world":
            raise ValueError("rendering applies to dataset: world only (a dataset's images are what they are)")
        return self

    def metric_prefix(self) -> str:
        if self.dataset != "world":
            return f"{self.metric_name}/{self.dataset.label()}"
        return self.metric_name if self.rendering is None else f"{self.metric_name}_{self.rendering}"

    def world_classification(self, context: EvalContext) -> dict[str, Classification]:
        """The world's labelled test sets by task name, in this task's rendering; their images
        are tagged by rendering only, so every task type that reads them shares their features."""
        rendering = self.rendering or context.world_config.rendering
        sets = classification_sets(context.world(), self.n or 1000, rendering=rendering)
        tag = "world/classify" if self.rendering is None else f"world/classify/{self.rendering}"
        return {
            task: Classification(ArrayImages(d.images, tag), d.labels, d.classnames, list(d.templates), task)
            for task, d in sets.items()
        }

    def dataset_classification(self) -> Classification:
        """The dataset's labelled images (``n`` of them spread evenly when given)."""
        data = self.dataset.read_classification()
        return data if self.n is None else first_images(data, self.n)


class ZeroShotTask(LabelledTaskConfig):
    """Zero-shot classification: the built-in world's tasks (``zeroshot/<task>/top1``) or a
    labelled dataset in any reader's format (``zeroshot/<name>/top1``, ``.../mean_per_class_recall``).

    With ``rendering`` the world's tasks are drawn in that rendering, a distribution shift of the
    same scenes, and report as ``zeroshot_<rendering>/<task>/top1`` beside the usual ones.
    """

    metric_name: ClassVar[str] = "zeroshot"

    type: Literal["zeroshot"] = Field("zeroshot", description="the task type")
    world_sets: list[WorldSet] | None = Field(
        None,
        min_length=1,
        description="dataset world only: which of its tasks (shape, color, shape_unseen, color_unseen); default all. "
        "A fine-tune on shape lists shape as its task (role id) and color apart (role unseen)",
    )

    descriptions: str | None = Field(
        None,
        description="dataset world only: a JSON file {class name: [descriptions]} (vislang describe's, CuPL's "
        "layout) for the world's classes; a dataset names its own in its section",
    )
    prompts: Literal["templates", "descriptions", "both"] = Field(
        "templates", description="dataset world only: what makes each class's classifier (as a dataset's prompts)"
    )

    path_fields: ClassVar[tuple[str, ...]] = ("descriptions",)

    def metric_prefix(self) -> str:
        """The labelled task's prefix, with the prompt choice when it is not the templates
        (``zeroshot_descriptions/shape/top1``), so the three CuPL comparisons sit side by side."""
        base = super().metric_prefix()
        return base if self.prompts == "templates" else f"{base}_{self.prompts}"

    @model_validator(mode="after")
    def _sets_need_world(self) -> ZeroShotTask:
        if self.dataset != "world" and (
            self.world_sets is not None or self.descriptions or self.prompts != "templates"
        ):
            raise ValueError(
                "world_sets, descriptions and prompts apply to dataset: world only (a dataset's own section has them)"
            )
        if self.prompts != "templates" and not self.descriptions:
            raise ValueError(f"prompts: {self.prompts} needs descriptions (a JSON file {{class name: [descriptions]}})")
        return self

    def build(self, context: EvalContext) -> list[Evaluator]:
        if self.dataset != "world":
            return [ZeroShotEvaluator(self.metric_prefix(), self.dataset_classification(), context, self.ties)]
        described = read_descriptions(self.descriptions) if self.descriptions else None
        return [
            ZeroShotEvaluator(
                f"{self.metric_prefix()}/{task}",
                replace(data, descriptions=described, prompts=self.prompts),
                context,
                self.ties,
            )
            for task, data in self.world_classification(context).items()
            if self.world_sets is None or task in self.world_sets
        ]


def first_images(data: Classification, n: int) -> Classification:
    """``n`` images spread evenly over the set (a quick run). A prefix would be the first
    classes only of a set stored class by class, as ImageFolder trees are."""
    total = len(data.labels)
    if n >= total:
        return data
    chosen = np.unique(np.linspace(0, total - 1, n).round().astype(int))
    return Classification(
        data.images.subset(chosen.tolist()),
        np.asarray(data.labels)[chosen],
        data.classnames,
        data.templates,
        data.name,
        data.descriptions,
        data.prompts,
    )


class ZeroShotEvaluator:
    """One labelled set scored by the objective's prompt ensemble; keeps the last predictions
    (for the suite's per-class and confusion plots)."""

    def __init__(self, name: str, data: Classification, context: EvalContext, ties: str = "clip_benchmark") -> None:
        if ties not in TIES:
            raise ValueError(f"ties must be one of {TIES}")
        self.name, self.data, self.ties = name, data, ties
        self.dataset = data.name  # the JSON's dataset field
        self.tokenizer, self.batch_size = context.tokenizer, context.batch_size
        self.precision, self.pipeline = context.precision, context.pipeline()
        prompts = data.class_prompts()
        self.texts = [text for texts in prompts for text in texts]
        self.counts = [len(texts) for texts in prompts]
        self.labels = torch.as_tensor(np.asarray(data.labels), dtype=torch.long)
        self.predictions: torch.Tensor | None = None

    @torch.no_grad()
    def __call__(self, objective: Objective, features) -> dict[str, float]:
        texts = features.texts(objective, self.texts, self.tokenizer, self.batch_size, self.precision)
        images = features.images(objective, self.data.images, self.pipeline, what=self.name)
        scores = class_scores(objective, images, texts, self.counts).float().cpu()
        if isinstance(objective, EmbeddingObjective):
            scores = 100.0 * scores
        self.predictions = scores.argmax(dim=1)
        ks = (1, 5) if len(self.counts) >= 5 else (1,)
        metrics = classification_metrics(scores, self.labels, ks, self.ties)
        return {f"{self.name}/{key}": value for key, value in metrics.items()}

    def details(self) -> dict[str, Any]:
        """What the suite's report draws: class names, labels and the last predictions."""
        return {
            "kind": "classification",
            "classnames": self.data.classnames,
            "labels": self.labels.tolist(),
            "predictions": None if self.predictions is None else self.predictions.tolist(),
            "ties": self.ties,
        }


def class_scores(objective: Objective, images: torch.Tensor, texts: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """[N, C] scores of every image against every class's prompt ensemble (``counts[c]`` prompts
    for class c, in order): one prototype per class, scored in one call where their shapes agree
    (embeddings always; a captioner's when every class has as many prompts)."""
    parts = torch.split(texts, counts)
    classes = [objective.ensemble_texts(part.unsqueeze(1)) for part in parts]  # each [1, ...]
    if len({tuple(c.shape) for c in classes}) == 1:
        return objective.scores(images, torch.cat(classes))
    return torch.cat([objective.scores(images, c) for c in classes], dim=1)
