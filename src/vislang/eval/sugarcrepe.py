"""SugarCrepe (Hsieh et al. 2023): does the true COCO caption outscore its hard negative?

Seven negative types (replace object / attribute / relation, swap object / attribute, add
object / attribute), read from the release's JSON files by
:func:`vislang.data.benchmark.sugarcrepe.read_sugarcrepe`. An item is right when the model
scores the image with its caption above the negative; a tie earns the expected credit of a
random tie-break (1/2), so a text tower that maps both captions to one point scores chance.

Every model accuracy is reported beside blind ones (see :mod:`vislang.eval.blind`), because
SugarCrepe exists to show that text alone can solve badly built negatives:

- ``sugarcrepe/<type>/acc``: the model, image and text;
- ``sugarcrepe/<type>/blind_text/acc``: the model's text side with no image (typicality among
  the candidates for embedding models, blank-image likelihood for captioners);
- ``sugarcrepe/<type>/blind_ngram/acc``: an n-gram model of a caption corpus (when ``corpus``
  is set);
- ``sugarcrepe/mean/...``: the unweighted mean over the evaluated types.
"""

from __future__ import annotations

import warnings
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from vislang.data.benchmark.base import FileImages
from vislang.data.benchmark.sugarcrepe import SugarCrepeItem, read_sugarcrepe
from vislang.eval.blind import NgramLM, Plausibility, text_tower_plausibility
from vislang.eval.encode import FeatureCache, ImagePipeline
from vislang.eval.metrics import candidate_credit
from vislang.eval.tasks import EvalContext, Evaluator, TaskConfig
from vislang.objectives import Objective

TypeName = Literal["replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att", "add_obj", "add_att"]


@torch.no_grad()
def own_candidate_scores(
    objective: Objective, image_features: torch.Tensor, text_features: torch.Tensor, chunk: int
) -> torch.Tensor:
    """[N, K] scores of image i against its own K candidates (``text_features`` [N, K, ...]),
    ``chunk`` images at a time so that a captioner's per-pair decoding stays bounded."""
    out = [
        objective.pair_scores(image_features[s : s + chunk], text_features[s : s + chunk]).float().cpu()
        for s in range(0, len(image_features), chunk)
    ]
    return torch.cat(out)


def blind_credit(scores: np.ndarray | torch.Tensor) -> np.ndarray:
    """Per item of [N, 2] blind (positive, negative) scores: 1, 1/2 on a tie, or 0."""
    return candidate_credit(torch.as_tensor(scores, dtype=torch.float64)).numpy()


class SugarCrepeEvaluator:
    """The SugarCrepe metrics of one objective (see the module docstring)."""

    def details(self) -> dict[str, str]:
        return {"kind": "candidates", "ties": "expected"}  # ties between captions share credit

    name, main = "sugarcrepe", "mean/acc"  # metric prefix; the metric a suite summary shows

    def __init__(
        self,
        items: dict[str, list[SugarCrepeItem]],
        tokenizer,
        pipeline: ImagePipeline,
        batch_size: int,
        image_size: int,
        ngram: NgramLM | None = None,
    ) -> None:
        self.items, self.tokenizer, self.pipeline = items, tokenizer, pipeline
        self.batch_size, self.image_size = batch_size, image_size
        paths = sorted({item.image for rows in items.values() for item in rows})
        position = {path: i for i, path in enumerate(paths)}
        self.images = FileImages(paths)  # each COCO image encoded once, whichever types use it
        self.image_index = {t: torch.tensor([position[item.image] for item in rows]) for t, rows in items.items()}
        self.texts = [text for rows in items.values() for item in rows for text in (item.positive, item.negative)]
        self.offsets: dict[str, tuple[int, int]] = {}
        start = 0
        for name, rows in items.items():
            self.offsets[name] = (start, start + len(rows))
            start += len(rows)
        self.ngram_credit = None
        if ngram is not None:
            flat = ngram.scores(self.texts).reshape(-1, 2)
            self.ngram_credit = {t: blind_credit(flat[a:b]) for t, (a, b) in self.offsets.items()}
        self.notes: list[str] = []

    def _model_credit(self, objective: Objective, features: FeatureCache) -> dict[str, np.ndarray]:
        images = features.images(objective, self.images, self.pipeline, "SugarCrepe images")
        texts = features.texts(objective, self.texts, self.tokenizer, self.batch_size, self.pipeline.precision)
        texts = texts.reshape(len(texts) // 2, 2, *texts.shape[1:])
        out = {}
        for name, (a, b) in self.offsets.items():
            own = images[self.image_index[name].to(images.device)]
            out[name] = candidate_credit(own_candidate_scores(objective, own, texts[a:b], self.batch_size)).numpy()
        return out

    def _text_credit(self, objective: Objective, features: FeatureCache) -> dict[str, np.ndarray] | None:
        found: Plausibility = text_tower_plausibility(
            objective, features, self.texts, self.tokenizer, self.batch_size, self.image_size, self.pipeline.precision
        )
        if found.scores is None:
            if found.reason not in self.notes:
                self.notes.append(found.reason)
                warnings.warn(f"sugarcrepe: no blind_text baseline: {found.reason}", stacklevel=2)
            return None
        flat = found.scores.view(-1, 2)
        return {t: blind_credit(flat[a:b]) for t, (a, b) in self.offsets.items()}

    @torch.no_grad()
    def __call__(self, objective: Objective, features: FeatureCache) -> dict[str, float]:
        scorers = {"": self._model_credit(objective, features), "blind_text/": self._text_credit(objective, features)}
        scorers["blind_ngram/"] = self.ngram_credit
        out: dict[str, float] = {}
        for prefix, credit in scorers.items():
            if credit is None:
                continue
            accuracies = {name: float(np.mean(values)) for name, values in credit.items()}
            out |= {f"sugarcrepe/{name}/{prefix}acc": value for name, value in accuracies.items()}
            out[f"sugarcrepe/mean/{prefix}acc"] = float(np.mean(list(accuracies.values())))
        return out


class SugarCrepeTask(TaskConfig):
    """SugarCrepe on local files: per negative type, the model's accuracy beside blind baselines."""

    type: Literal["sugarcrepe"] = Field("sugarcrepe", description="the task type")
    path_fields: ClassVar[tuple[str, ...]] = ("root", "images", "corpus")
    root: str = Field(description="folder holding the release's <type>.json files")
    images: str = Field(description="the COCO val2017 image folder the files' filenames are relative to")
    types: list[TypeName] | None = Field(
        None, min_length=1, description="negative types to evaluate (default all seven; only their files must exist)"
    )
    n: int | None = Field(None, ge=1, description="first items of each type (default all)")
    corpus: str | None = Field(
        None,
        description="caption corpus for the n-gram blind baseline: text (one caption a line), JSONL or JSON list, "
        "or COCO caption annotations; not the val2017 captions (default: no n-gram baseline)",
    )
    ngram_order: int = Field(3, ge=1, le=6, description="order of the n-gram baseline (3 = trigram)")

    def build(self, context: EvalContext) -> list[Evaluator]:
        items = read_sugarcrepe(self.root, self.images, self.types, self.n)
        ngram = NgramLM.from_file(self.corpus, self.ngram_order) if self.corpus else None
        pipeline = context.pipeline()
        return [SugarCrepeEvaluator(items, context.tokenizer, pipeline, context.batch_size, context.image_size, ngram)]
