"""Zero-shot classification: each class is represented by its prompt templates, ensembled by
the objective (for embedding models: the normalised mean of normalised template embeddings)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from vislang.data.world_tasks import ClassificationSet, classification_sets
from vislang.eval.encode import image_features, text_features
from vislang.eval.metrics import topk_accuracy
from vislang.eval.tasks import EvalContext, Evaluator, TaskConfig
from vislang.objectives import Objective


class ZeroShotTask(TaskConfig):
    """Zero-shot classification by prompt ensembles: ``zeroshot/<task>/top1`` (and top5)."""

    type: Literal["zeroshot"] = Field("zeroshot", description="the task type")
    dataset: Literal["world"] = Field(
        "world", description="world: the built-in world's tasks (shape, colour, size, ...) on its test split"
    )
    n: int = Field(1000, ge=1, description="test images per classification task")

    def build(self, context: EvalContext) -> list[Evaluator]:
        sets = classification_sets(context.world(), self.n)
        return [ZeroShotEvaluator(task, data, **context.common()) for task, data in sets.items()]


class ZeroShotEvaluator:
    def __init__(self, task: str, data: ClassificationSet, tokenizer, mean, std, batch_size: int = 500) -> None:
        self.name, self.data, self.mean, self.std, self.batch_size = f"zeroshot/{task}", data, mean, std, batch_size
        prompts = [template.format(c) for template in data.templates for c in data.classnames]
        self.tokens = tokenizer(prompts)  # [T * C, L], template-major
        self.labels = torch.as_tensor(data.labels)

    @torch.no_grad()
    def __call__(self, objective: Objective) -> dict[str, float]:
        n_templates, n_classes = len(self.data.templates), len(self.data.classnames)
        texts = text_features(objective, self.tokens, self.batch_size)
        classes = objective.ensemble_texts(texts.view(n_templates, n_classes, *texts.shape[1:]))
        images = image_features(objective, self.data.images, self.mean, self.std, self.batch_size)
        scores = objective.scores(images, classes).cpu()
        ks = (1, 5) if n_classes > 5 else (1,)
        return {f"{self.name}/{key}": value for key, value in topk_accuracy(scores, self.labels, ks).items()}
