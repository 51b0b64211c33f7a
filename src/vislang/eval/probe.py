"""Probes on frozen image features: CLIP's linear probe, big_vision's few-shot ridge probe and a
weighted k-NN, on one labelled dataset's train and test splits (or the world's shape and colour).

Features come from the suite's cache, so the three methods (and a zero-shot task on the same
test split) encode each image once. The math lives in :mod:`vislang.eval.probes`.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, PositiveInt, SerializeAsAny, field_validator

from vislang.data.benchmark import ArrayImages, Classification, DatasetConfig, dataset_section
from vislang.data.world_tasks import classification_sets
from vislang.errors import DataError
from vislang.eval.probes import knn_accuracy, linear_probe, ridge_fewshot
from vislang.eval.tasks import EvalContext, Evaluator, TaskConfig
from vislang.eval.zeroshot import first_images
from vislang.objectives import Objective

Method = Literal["linear", "fewshot", "knn"]


class ProbeTask(TaskConfig):
    """Frozen-feature probes: ``probe/<name>/linear/acc1``, ``probe/<name>/fewshot/<k>shot/acc``,
    ``probe/<name>/knn/acc1``."""

    type: Literal["probe"] = Field("probe", description="the task type")
    dataset: Literal["world"] | SerializeAsAny[DatasetConfig] = Field(
        "world",
        description="world: shape and colour on the world's train and test splits; or a labelled dataset whose "
        "`split` is the test split",
    )
    train_split: str = Field("train", description="the split the probes are fitted on")
    methods: list[Method] = Field(
        ["linear", "fewshot", "knn"], min_length=1, description="linear (CLIP's), fewshot (big_vision's), knn"
    )
    n_train: int | None = Field(
        None, ge=1, description="training images (the world: default 2000; a dataset: all, else n spread evenly)"
    )
    n: int | None = Field(
        None, ge=1, description="test images (the world: default 1000; a dataset: all, else n spread evenly)"
    )
    shots: list[PositiveInt] = Field([1, 5, 10, 25], min_length=1, description="few-shot: examples per class")
    repeats: int = Field(3, ge=1, description="few-shot: seeded draws of the shots per shot count")
    k: int = Field(20, ge=1, description="k-NN: neighbours that vote")
    temperature: float = Field(
        0.07, gt=0, allow_inf_nan=False, description="k-NN: votes weigh exp(similarity / temperature)"
    )
    seed: int = Field(0, ge=0, description="the validation split and the few-shot draws")

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset(cls, value: Any) -> Any:
        return dataset_section(value, "probes", "classifies")

    def metric_prefix(self) -> str:
        return "probe" if self.dataset == "world" else f"probe/{self.dataset.label()}"

    def build(self, context: EvalContext) -> list[Evaluator]:
        if self.dataset == "world":
            world = context.world()
            train = classification_sets(world, self.n_train or 2000, split="train")
            test = classification_sets(world, self.n or 1000, split="test")
            return [
                ProbeEvaluator(
                    f"probe/{task}", _world_set(train[task], "train"), _world_set(test[task], "test"), self, context
                )
                for task in train
            ]
        test = self.dataset.read_classification()
        train = self.dataset.read_classification(self.train_split)
        if self.n is not None:
            test = first_images(test, self.n)
        if self.n_train is not None:
            train = first_images(train, self.n_train)
        return [ProbeEvaluator(self.metric_prefix(), train, test, self, context)]


def _world_set(data, split: str) -> Classification:
    return Classification(ArrayImages(data.images, f"world/classify/{split}"), data.labels, data.classnames, [], split)


class ProbeEvaluator:
    main = "linear/acc1"  # the metric a suite summary shows

    def __init__(
        self, name: str, train: Classification, test: Classification, task: ProbeTask, context: EvalContext
    ) -> None:
        if list(train.classnames) != list(test.classnames):
            differ = next((f"{a!r} / {b!r}" for a, b in zip(train.classnames, test.classnames) if a != b), "")
            raise DataError(
                f"{name}: the train and test splits name different classes ({len(train.classnames)} / "
                f"{len(test.classnames)} classes{'; first difference ' + differ if differ else ''}); give classnames"
            )
        self.name, self.train, self.test, self.task = name, train, test, task
        self.pipeline = context.pipeline()
        self.curve: list = []
        self.skipped_shots: list[int] = []

    @torch.no_grad()
    def __call__(self, objective: Objective, features) -> dict[str, float]:
        train_x = _pooled(features.images(objective, self.train.images, self.pipeline, what=f"{self.name} train"))
        test_x = _pooled(features.images(objective, self.test.images, self.pipeline, what=f"{self.name} test"))
        train_y = torch.as_tensor(np.asarray(self.train.labels), dtype=torch.long)
        test_y = torch.as_tensor(np.asarray(self.test.labels), dtype=torch.long)
        n_classes, t, out = len(self.train.classnames), self.task, {}
        if "linear" in t.methods:
            result = linear_probe(train_x, train_y, test_x, test_y, n_classes, seed=t.seed)
            self.curve = result.pop("val_curve")
            out |= {f"linear/{key}": float(value) for key, value in result.items()}
        if "fewshot" in t.methods:
            smallest = int(torch.bincount(train_y, minlength=n_classes).min())
            usable = [s for s in t.shots if s <= smallest]
            self.skipped_shots = [s for s in t.shots if s > smallest]
            if self.skipped_shots:
                warnings.warn(
                    f"{self.name}: the smallest class has {smallest} training images; "
                    f"few-shot at {self.skipped_shots} shots left out",
                    stacklevel=2,
                )
            for shots, result in ridge_fewshot(
                train_x, train_y, test_x, test_y, n_classes, usable, t.repeats, t.seed
            ).items():
                out[f"fewshot/{shots}shot/acc"] = float(result["mean"])
                out[f"fewshot/{shots}shot/std"] = float(result["std"])
        if "knn" in t.methods:
            out["knn/acc1"] = knn_accuracy(train_x, train_y, test_x, test_y, n_classes, t.k, t.temperature)
        return {f"{self.name}/{key}": value for key, value in out.items()}

    def details(self) -> dict[str, Any]:
        return {"kind": "probe", "val_curve": self.curve, "skipped_shots": self.skipped_shots}


def _pooled(x: torch.Tensor) -> torch.Tensor:
    """One vector per image (a captioner's image features are token sequences: their mean)."""
    return x.float().mean(dim=1) if x.dim() == 3 else x.float()
