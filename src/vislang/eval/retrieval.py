"""Image↔text retrieval: Recall@k in both directions (a query scores when any of its positives is
in its top k, CLIP_benchmark's convention), several captions per image, scored in chunks so
memory is O(chunk × N), and the mean of the two R@1 (DataComp's retrieval score)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, PositiveInt, SerializeAsAny, field_validator, model_validator

from vislang.config import SourceConfig
from vislang.data import source_retrieval_set
from vislang.data.benchmark import ArrayImages, DatasetConfig, Retrieval, dataset_section
from vislang.data.shards import is_remote
from vislang.data.world_tasks import retrieval_set
from vislang.eval.metrics import TIES, retrieval_recall, retrieval_recall_topk
from vislang.eval.tasks import EvalContext, Evaluator, TaskConfig
from vislang.eval.zeroshot import TIES_DESCRIPTION, Ties
from vislang.objectives import Objective
from vislang.objectives.contrastive import EmbeddingObjective


class RetrievalTask(TaskConfig):
    """Image-text retrieval, R@k both ways: on the world's test split (``retrieval/...``), on a
    held-out training source (``retrieval_<name>/...``) or on a captioned dataset such as a
    Karpathy split (``retrieval_<name>/...``)."""

    type: Literal["retrieval"] = Field("retrieval", description="the task type")
    source: SourceConfig | None = Field(
        None, description="held-out data of any training-source kind (one caption per image)"
    )
    dataset: SerializeAsAny[DatasetConfig] | None = Field(
        None,
        description="a captioned dataset {format: karpathy | manifest | clip_benchmark, path: ..., split: ...} "
        "(several captions per image); neither source nor dataset: the built-in world",
    )
    n: int | None = Field(
        None, ge=1, description="images scored (the world: default 1000; a source or dataset: default the whole set)"
    )
    name: str | None = Field(None, description="metric prefix retrieval_<name> (default: the source's or dataset's)")
    ks: list[PositiveInt] = Field([1, 5, 10], min_length=1, description="the k of each Recall@k")
    ties: Ties = Field("clip_benchmark", description=TIES_DESCRIPTION)

    @field_validator("source")
    @classmethod
    def _not_world(cls, value: SourceConfig | None) -> SourceConfig | None:
        if value is not None and value.kind == "world":
            raise ValueError("the world's retrieval set is the task without a source")
        return value

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset(cls, value: Any) -> Any:
        return dataset_section(value, "retrieval", "captioned")

    @field_validator("ks")
    @classmethod
    def _ks(cls, value: list[int]) -> list[int]:
        return sorted(set(value))

    @model_validator(mode="after")
    def _one_set(self) -> RetrievalTask:
        if self.source is not None and self.dataset is not None:
            raise ValueError("give a source or a dataset, not both")
        return self

    def resolve(self, base) -> RetrievalTask:
        """As every task, plus a held-out source's local paths (each ``::`` part; URLs and
        ``pipe:`` commands as they are)."""
        task = super().resolve(base)
        if task.source is None or not task.source.path:
            return task
        parts = [p if is_remote(p) else _absolute(p, base) for p in task.source.path.split("::")]
        return task.model_copy(update={"source": task.source.model_copy(update={"path": "::".join(parts)})})

    def metric_prefix(self) -> str:
        if self.dataset is not None:
            return f"retrieval_{self.name or self.dataset.label()}"
        if self.source is not None:
            return f"retrieval_{self.name or self.source.name or self.source.kind}"
        return "retrieval"

    def build(self, context: EvalContext) -> list[Evaluator]:
        if self.dataset is not None:
            data = self.dataset.read_retrieval()
            if self.n is not None and self.n < len(data.captions):
                data = Retrieval(data.images.subset(range(self.n)), data.captions[: self.n], data.name)
        else:
            if self.source is None:
                raw = retrieval_set(context.world(), self.n or 1000)
            else:
                raw = source_retrieval_set(context.open_source(self.source), self.n, context.seed)
            captions: list[list[str]] = [[] for _ in range(len(raw.images))]
            for text, owner in zip(raw.texts, raw.text_image):
                captions[owner].append(text)
            data = Retrieval(ArrayImages(raw.images, self.metric_prefix()), captions, self.metric_prefix())
        return [RetrievalEvaluator(self.metric_prefix(), data, context, self.ties, tuple(self.ks))]


def _absolute(path: str, base) -> str:
    local = Path(path).expanduser()
    return str(local if local.is_absolute() else Path(base) / local)


class RetrievalEvaluator:
    """One image-caption set, ranked both ways; keeps the last recall curve for the suite's plot."""

    def __init__(
        self,
        name: str,
        data: Retrieval,
        context: EvalContext,
        ties: str = "clip_benchmark",
        ks: tuple[int, ...] = (1, 5, 10),
    ) -> None:
        if ties not in TIES:
            raise ValueError(f"ties must be one of {TIES}")
        self.name, self.data, self.ties, self.ks = name, data, ties, ks
        self.tokenizer, self.batch_size = context.tokenizer, context.batch_size
        self.precision, self.pipeline = context.precision, context.pipeline()
        self.texts, owner = data.texts()
        self.text_image = torch.as_tensor(np.asarray(owner), dtype=torch.long)
        self.ties_used: str | None = None
        self.last: dict[str, float] = {}
        self.main, self.dataset = f"mean_R@{min(ks)}", data.name  # the summary's metric; the JSON's dataset

    @torch.no_grad()
    def __call__(self, objective: Objective, features) -> dict[str, float]:
        images = features.images(objective, self.data.images, self.pipeline, what=self.name)
        texts = features.texts(objective, self.texts, self.tokenizer, self.batch_size, self.precision)
        owner = self.text_image.to(images.device)
        if self.ties == "clip_benchmark" and isinstance(objective, EmbeddingObjective):
            recalls = retrieval_recall_topk(images, texts, owner, objective.scores, self.ks, chunk=self.batch_size)
            self.ties_used = "clip_benchmark"
        else:  # a captioner scores every pair once: ranks come from counts, ties shared
            recalls = retrieval_recall(
                images,
                texts,
                owner,
                objective.scores,
                self.ks,
                chunk=self.batch_size,
                pair_score=lambda a, b: objective.pair_scores(a, b[:, None])[:, 0],
            )
            self.ties_used = "expected"
        first = min(self.ks)
        recalls[f"mean_R@{first}"] = (recalls[f"text_to_image/R@{first}"] + recalls[f"image_to_text/R@{first}"]) / 2
        self.last = recalls
        return {f"{self.name}/{key}": value for key, value in recalls.items()}

    def details(self) -> dict[str, Any]:
        return {"kind": "retrieval", "ks": list(self.ks), "recalls": self.last, "ties": self.ties_used or self.ties}
