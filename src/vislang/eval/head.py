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

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from vislang.data.benchmark import Classification
from vislang.errors import ConfigError
from vislang.eval.encode import FeatureCache
from vislang.eval.metrics import TIES, classification_metrics
from vislang.eval.tasks import EvalContext, Evaluator
from vislang.eval.zeroshot import LabelledTaskConfig
from vislang.objectives import Objective


class HeadTask(LabelledTaskConfig):
    """Accuracy of the objective's classifier: the world's one-object test scenes labelled by
    ``world_task`` (``head/<task>/top1``, ``head/<task>_unseen/top1``) or a labelled dataset whose
    class names are the head's (``head/<name>/top1``); with ``rendering``, the world's scenes drawn
    in a shifted rendering (``head_<rendering>/...``), as the zero-shot task does it."""

    metric_name: ClassVar[str] = "head"

    type: Literal["head"] = Field("head", description="the task type")
    world_task: Literal["shape", "color"] | None = Field(
        None,
        description="dataset world only: what the head predicts, shape or color (the labelled source's "
        "world_task it was fine-tuned on); default shape",
    )

    @model_validator(mode="after")
    def _task_needs_world(self) -> HeadTask:
        if self.dataset != "world" and self.world_task is not None:
            raise ValueError("world_task applies to dataset: world only")
        return self

    def build(self, context: EvalContext) -> list[Evaluator]:
        if self.dataset != "world":
            return [HeadEvaluator(self.metric_prefix(), self.dataset_classification(), context, self.ties)]
        sets, task = self.world_classification(context), self.world_task or "shape"
        return [
            HeadEvaluator(f"{self.metric_prefix()}/{name}", sets[name], context, self.ties)
            for name in (task, f"{task}_unseen")
        ]


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
