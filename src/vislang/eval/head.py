"""The objective's own classifier on labelled images: what a fine-tuned head (cross-entropy
initialised from the zero-shot classifier, LP-FT, CoOp's learned prompts) predicts, scored like
zero-shot classification. Zero-shot reads the class prompts through the text tower; this reads
:meth:`~vislang.objectives.base.Objective.classify`, so after a fine-tune the two answer
different questions (the prompts the towers still understand vs. the head that was trained) and
a report can show both.

The head's rows mean the classes it was built with (``objective.classes``), in their order; a
dataset with other class names (or another order) would be scored against the wrong rows, so it
is refused rather than measured. Images are encoded through the shared feature cache with the
zero-shot task's tags, so a suite that runs both encodes each image once.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, SerializeAsAny, field_validator, model_validator

from vislang.config.data import Rendering
from vislang.data.benchmark import ArrayImages, Classification, DatasetConfig, dataset_section
from vislang.data.world_tasks import classification_sets
from vislang.errors import ConfigError
from vislang.eval.encode import FeatureCache
from vislang.eval.metrics import TIES, classification_metrics
from vislang.eval.tasks import EvalContext, Evaluator, TaskConfig
from vislang.eval.zeroshot import TIES_DESCRIPTION, Ties, first_images
from vislang.objectives import Objective


class HeadTask(TaskConfig):
    """Accuracy of the objective's classifier: the world's one-object test scenes labelled by
    ``world_task`` (``head/<task>/top1``, ``head/<task>_unseen/top1``) or a labelled dataset
    (``head/<name>/top1``); with ``rendering``, the world's scenes drawn in a shifted rendering
    (``head_<rendering>/...``), as the zero-shot task does it."""

    type: Literal["head"] = Field("head", description="the task type")
    dataset: Literal["world"] | SerializeAsAny[DatasetConfig] = Field(
        "world",
        description="world: the built-in world's one-object test scenes labelled by world_task; or a labelled "
        "dataset {format: imagefolder | manifest | clip_benchmark | cifar, path: ..., split: ...} whose class "
        "names are the head's",
    )
    world_task: Literal["shape", "color"] | None = Field(
        None,
        description="dataset world only: what the head predicts, shape or color (the labelled source's "
        "world_task it was fine-tuned on); default shape",
    )
    n: int | None = Field(
        None,
        ge=1,
        description="test images (the world: default 1000 per set; a dataset: default all of it, else n spread "
        "evenly over it)",
    )
    ties: Ties = Field("clip_benchmark", description=TIES_DESCRIPTION)
    rendering: Rendering | None = Field(
        None,
        description="dataset world only: draw its test images as filled | sketch | textured | palette (the "
        "same scenes; metrics head_<rendering>/...); default: the world's own rendering (head/...)",
    )

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset(cls, value: Any) -> Any:
        return dataset_section(value, "the head's classification", "classifies")

    @model_validator(mode="after")
    def _world_only(self) -> HeadTask:
        if self.dataset != "world" and (self.rendering is not None or self.world_task is not None):
            raise ValueError("rendering and world_task apply to dataset: world only")
        return self

    def metric_prefix(self) -> str:
        if self.dataset != "world":
            return f"head/{self.dataset.label()}"
        return "head" if self.rendering is None else f"head_{self.rendering}"

    def build(self, context: EvalContext) -> list[Evaluator]:
        if self.dataset != "world":
            data = self.dataset.read_classification()
            if self.n is not None:
                data = first_images(data, self.n)
            return [HeadEvaluator(self.metric_prefix(), data, context, self.ties)]
        task = self.world_task or "shape"
        rendering = self.rendering or context.world_config.rendering
        sets = classification_sets(context.world(), self.n or 1000, rendering=rendering)
        # the zero-shot task's tags: the same images, encoded once for both
        tag = "world/classify" if self.rendering is None else f"world/classify/{self.rendering}"
        evaluators: list[Evaluator] = []
        for name in (task, f"{task}_unseen"):
            data = sets[name]
            images = ArrayImages(data.images, tag)
            labelled = Classification(images, data.labels, data.classnames, list(data.templates), name)
            evaluators.append(HeadEvaluator(f"{self.metric_prefix()}/{name}", labelled, context, self.ties))
        return evaluators


def _names(names: tuple[str, ...] | list[str], most: int = 6) -> str:
    shown = ", ".join(names[:most])
    return shown + (f", ... ({len(names)} in all)" if len(names) > most else "")


def check_classes(objective: Objective, data: Classification, where: str) -> None:
    """Refuse an objective whose head does not predict ``data``'s classes in ``data``'s order:
    its logits' columns would be read as the wrong classes."""
    kind = type(objective).__name__
    if objective.classes is None:
        raise ConfigError(
            f"{where}: the {kind} has no classifier of its own (no classes); the head task evaluates objectives "
            "that classify (a fine-tuned head, learned prompts); use a zeroshot task for this model"
        )
    ours, theirs = tuple(objective.classes.classnames), tuple(data.classnames)
    if ours != theirs:
        raise ConfigError(
            f"{where}: the objective's classes ({objective.classes.name}: {_names(ours)}) are not the dataset's "
            f"({data.name}: {_names(theirs)}); a head is scored on the classes it was built with, in their order"
        )


class HeadEvaluator:
    """One labelled set scored by the objective's :meth:`classify`; keeps the last predictions
    (for the suite's per-class and confusion plots)."""

    def __init__(self, name: str, data: Classification, context: EvalContext, ties: str = "clip_benchmark") -> None:
        if ties not in TIES:
            raise ValueError(f"ties must be one of {TIES}")
        self.name, self.data, self.ties = name, data, ties
        self.dataset = data.name  # the JSON's dataset field
        self.pipeline = context.pipeline()
        self.labels = torch.as_tensor(np.asarray(data.labels), dtype=torch.long)
        self.predictions: torch.Tensor | None = None

    @torch.no_grad()
    def __call__(self, objective: Objective, features: FeatureCache) -> dict[str, float]:
        check_classes(objective, self.data, self.name)
        images = features.images(objective, self.data.images, self.pipeline, what=self.name)
        logits = objective.classify(images)
        if logits is None:
            raise ConfigError(
                f"{self.name}: the {type(objective).__name__} has classes but no classifier (classify() gives None)"
            )
        logits = logits.float().cpu()
        if logits.shape != (len(self.labels), len(self.data.classnames)):
            raise ConfigError(
                f"{self.name}: classify() gave logits of shape {list(logits.shape)}, expected "
                f"[{len(self.labels)}, {len(self.data.classnames)}] (images, classes)"
            )
        self.predictions = logits.argmax(dim=1)
        ks = (1, 5) if len(self.data.classnames) >= 5 else (1,)
        metrics = classification_metrics(logits, self.labels, ks, self.ties)
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
