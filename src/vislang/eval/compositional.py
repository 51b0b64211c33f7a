"""Compositional probes in ARO's form: does the true caption outscore its perturbations?"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from vislang.data.benchmark import ArrayImages
from vislang.data.transforms import ImageTransform
from vislang.data.world_tasks import ProbeSet, probe_sets
from vislang.eval.encode import FeatureCache, ImagePipeline, image_features, text_features
from vislang.eval.metrics import candidate_accuracy
from vislang.eval.tasks import EvalContext, Evaluator, TaskConfig
from vislang.objectives import Objective


class CompositionalTask(TaskConfig):
    """The world's ARO-style probes (relation, attribute, order): ``compositional/<probe>/acc``."""

    type: Literal["compositional"] = Field("compositional", description="the task type")
    n: int = Field(500, ge=1, description="items per probe")

    def build(self, context: EvalContext) -> list[Evaluator]:
        sets = probe_sets(context.world(), self.n)
        return [ProbeEvaluator(probe, data, **context.common()) for probe, data in sets.items()]


class ProbeEvaluator:
    def __init__(self, probe: str, data: ProbeSet, tokenizer, mean, std, batch_size: int = 500) -> None:
        self.name, self.data, self.mean, self.std, self.batch_size = (
            f"compositional/{probe}",
            data,
            mean,
            std,
            batch_size,
        )
        self.k = len(data.candidates[0])
        self.tokens = tokenizer([text for row in data.candidates for text in row])  # [N * K, L]

    @torch.no_grad()
    def __call__(self, objective: Objective, features: FeatureCache | None = None) -> dict[str, float]:
        if features is None:
            images = image_features(objective, self.data.images, self.mean, self.std, self.batch_size)
        else:
            pipeline = ImagePipeline(ImageTransform(self.data.images.shape[1]), self.mean, self.std, self.batch_size)
            images = features.images(objective, ArrayImages(self.data.images, self.name), pipeline, self.name)
        texts = text_features(objective, self.tokens, self.batch_size)
        scores = objective.pair_scores(images, texts.view(len(images), self.k, *texts.shape[1:]))
        return {f"{self.name}/acc": candidate_accuracy(scores.cpu())}

    def details(self) -> dict[str, str]:
        return {"kind": "candidates", "ties": "expected"}  # the true caption first: ties share credit
