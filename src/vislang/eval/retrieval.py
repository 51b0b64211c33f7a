"""Image↔text retrieval: Recall@1/5/10 in both directions, scored in chunks."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator

from vislang.config import SourceConfig
from vislang.data import source_retrieval_set
from vislang.data.world_tasks import RetrievalSet, retrieval_set
from vislang.eval.encode import image_features, text_features
from vislang.eval.metrics import retrieval_recall
from vislang.eval.tasks import EvalContext, Evaluator, TaskConfig
from vislang.objectives import Objective


class RetrievalTask(TaskConfig):
    """Image-text retrieval, R@1/5/10 both ways: on the world's test split (``retrieval/...``) or
    on the first ``n`` usable samples of a held-out source (``retrieval_<name>/...``)."""

    type: Literal["retrieval"] = Field("retrieval", description="the task type")
    source: SourceConfig | None = Field(
        None, description="held-out data of any source kind (one caption per image); none: the built-in world"
    )
    n: int = Field(1000, ge=1, description="image-caption pairs")
    name: str | None = Field(None, description="metric prefix retrieval_<name> (default: the source's name or kind)")

    @field_validator("source")
    @classmethod
    def _not_world(cls, value: SourceConfig | None) -> SourceConfig | None:
        if value is not None and value.kind == "world":
            raise ValueError("the world's retrieval set is the task without a source")
        return value

    def metric_prefix(self) -> str:
        if self.source is None:
            return "retrieval"
        return f"retrieval_{self.name or self.source.name or self.source.kind}"

    def build(self, context: EvalContext) -> list[Evaluator]:
        if self.source is None:
            data = retrieval_set(context.world(), self.n)
        else:
            data = source_retrieval_set(context.open_source(self.source), self.n, context.seed)
        return [RetrievalEvaluator(data, **context.common(), name=self.metric_prefix())]


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
