"""Image↔text retrieval: Recall@1/5/10 in both directions, scored in chunks."""

from __future__ import annotations

import torch

from vislang.data.world_tasks import RetrievalSet
from vislang.eval.encode import image_features, text_features
from vislang.eval.metrics import retrieval_recall
from vislang.objectives.base import Objective


class RetrievalEvaluator:
    def __init__(
        self, data: RetrievalSet, tokenizer, mean, std, batch_size: int = 500, name: str = "retrieval"
    ) -> None:
        self.name, self.data, self.mean, self.std, self.batch_size = name, data, mean, std, batch_size
        self.tokens = tokenizer(data.texts)
        self.text_image = torch.as_tensor(data.text_image)

    @torch.no_grad()
    def __call__(self, objective: Objective) -> dict[str, float]:
        images = image_features(objective, self.data.images, self.mean, self.std, self.batch_size)
        texts = text_features(objective, self.tokens, self.batch_size)
        recalls = retrieval_recall(
            images,
            texts,
            self.text_image.to(images.device),
            objective.scores,
            chunk=self.batch_size,
            pair_score=lambda a, b: objective.pair_scores(a, b[:, None])[:, 0],
        )
        return {f"{self.name}/{key}": value for key, value in recalls.items()}
