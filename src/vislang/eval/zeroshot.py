"""Zero-shot classification: each class is represented by its prompt templates, ensembled by
the objective (for embedding models: the normalised mean of normalised template embeddings)."""

from __future__ import annotations

import torch

from vislang.data.world_tasks import ClassificationSet
from vislang.eval.encode import image_features, text_features
from vislang.eval.metrics import topk_accuracy
from vislang.objectives.base import Objective


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
