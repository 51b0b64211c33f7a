"""Winoground (Thrush et al. 2022): two images, two captions with the same words; match them.

With ``s(c, i)`` the score of caption ``c`` with image ``i``, Winoground's three scores per
example are: text (each image prefers its own caption: ``s(c0, i0) > s(c1, i0)`` and
``s(c1, i1) > s(c0, i1)``), image (each caption prefers its own image: ``s(c0, i0) > s(c0, i1)``
and ``s(c1, i1) > s(c1, i0)``) and group (all four). Ties never favour the model: an example
earns the probability that the condition holds when tied scores are put in a uniformly random
order (text and image: the product of the two comparisons' credits, as the two compare disjoint
pairs; group: the share of orderings of the four scores, consistent with them, that satisfy all
four). Reported overall (``winoground/text``, ``/image``, ``/group``) and per ``collapsed_tag``
(``winoground/object/...``, ``relation``, ``both``).

Blind baselines: a text-only scorer gives a caption one score for both images, so it can only
answer the text question, and there Winoground's pairing cancels any text prior: the caption
it prefers is wrong for one of the two images, so its text score is 0 (1/4 for an exact tie;
chance is 1/4). ``blind_text/text`` and ``blind_ngram/text`` show that floor beside the
model's text score. What the prior does to the *model* is shown by ``same_caption`` (share of
examples where the model picks one caption for both images, the failure a text prior causes)
and ``blind_text/prior_agreement`` / ``blind_ngram/prior_agreement`` (share where that one
caption is the one the blind scorer prefers).
"""

from __future__ import annotations

import itertools
import warnings
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from vislang.data.benchmark.base import FileImages
from vislang.data.benchmark.winoground import WinogroundItem, read_winoground
from vislang.eval.blind import NgramLM, text_tower_plausibility
from vislang.eval.encode import FeatureCache, ImagePipeline
from vislang.eval.metrics import candidate_credit
from vislang.eval.sugarcrepe import own_candidate_scores
from vislang.eval.tasks import EvalContext, Evaluator, TaskConfig
from vislang.objectives import Objective

_ORDERS = torch.tensor(list(itertools.permutations(range(4))))  # [24, 4]: a rank for each of the 4 scores


def text_credit(scores: torch.Tensor) -> torch.Tensor:
    """Per example of [N, image, caption] scores: expected text score under random tie-breaks."""
    return candidate_credit(scores[:, 0, :]) * candidate_credit(scores[:, 1, [1, 0]])


def image_credit(scores: torch.Tensor) -> torch.Tensor:
    """Per example of [N, image, caption] scores: expected image score under random tie-breaks."""
    return candidate_credit(scores[:, :, 0]) * candidate_credit(scores[:, [1, 0], 1])


def group_credit(scores: torch.Tensor) -> torch.Tensor:
    """Per example: the share of strict orderings of its four scores that agree with every strict
    inequality among them and put s(c0,i0) and s(c1,i1) above both s(c1,i0) and s(c0,i1)."""
    flat = scores.reshape(-1, 4).double()  # [s(i0,c0), s(i0,c1), s(i1,c0), s(i1,c1)]
    above = flat[:, :, None] > flat[:, None, :]  # [N, 4, 4]
    ranks = _ORDERS.to(flat.device)
    rank_above = ranks[:, :, None] > ranks[:, None, :]  # [24, 4, 4]
    consistent = ~(above[:, None] & ~rank_above[None]).flatten(2).any(dim=2)  # [N, 24]
    r00, r01, r10, r11 = ranks.unbind(dim=1)
    holds = (r00 > r01) & (r00 > r10) & (r11 > r01) & (r11 > r10)  # [24]
    return ((consistent & holds[None]).sum(dim=1).double() / consistent.sum(dim=1)).float()


def blind_matrix(caption_scores: torch.Tensor) -> torch.Tensor:
    """[N, 2] per-caption blind scores as [N, image, caption] scores that ignore the image."""
    caption_scores = torch.as_tensor(caption_scores, dtype=torch.float64)
    return caption_scores[:, None, :].expand(-1, 2, -1)


def _picks_caption_0(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example: the chance that image 0, and that image 1, picks caption 0."""
    return candidate_credit(scores[:, 0, :]), candidate_credit(scores[:, 1, :])


def same_caption(scores: torch.Tensor) -> torch.Tensor:
    """Per example: the chance that the model picks one caption for both images."""
    first, second = _picks_caption_0(scores)
    return first * second + (1 - first) * (1 - second)


def prior_agreement(scores: torch.Tensor, caption_scores: torch.Tensor) -> torch.Tensor:
    """Per example: the chance that the model picks one caption for both images and that caption
    is the blind scorer's favourite (``caption_scores`` [N, 2]); ties broken at random."""
    first, second = _picks_caption_0(scores)
    blind_c0 = candidate_credit(torch.as_tensor(caption_scores, dtype=torch.float64)).to(first)
    return first * second * blind_c0 + (1 - first) * (1 - second) * (1 - blind_c0)


class WinogroundEvaluator:
    """The Winoground metrics of one objective (see the module docstring)."""

    def details(self) -> dict[str, str]:
        return {"kind": "candidates", "ties": "expected"}  # ties between captions share credit

    name, main = "winoground", "group"  # metric prefix; the metric a suite summary shows

    def __init__(
        self,
        items: list[WinogroundItem],
        tokenizer,
        pipeline: ImagePipeline,
        batch_size: int,
        image_size: int,
        ngram: NgramLM | None = None,
    ) -> None:
        self.items, self.tokenizer, self.pipeline = items, tokenizer, pipeline
        self.batch_size, self.image_size = batch_size, image_size
        self.images = FileImages([path for item in items for path in item.images])  # i0, i1 of each example
        self.texts = [caption for item in items for caption in item.captions]  # c0, c1 of each example
        self.tags = [item.collapsed_tag.lower() for item in items]
        self.ngram_scores = None if ngram is None else torch.from_numpy(ngram.scores(self.texts).reshape(-1, 2))
        self.notes: list[str] = []

    def _scores(self, objective: Objective, features: FeatureCache) -> torch.Tensor:
        """[N, image, caption] model scores."""
        images = features.images(objective, self.images, self.pipeline, "Winoground images")
        texts = features.texts(objective, self.texts, self.tokenizer, self.batch_size, self.pipeline.precision)
        pairs = texts.reshape(len(self.items), 2, *texts.shape[1:]).repeat_interleave(2, dim=0)  # per image
        return own_candidate_scores(objective, images, pairs, self.batch_size).view(len(self.items), 2, 2)

    def _blind_text(self, objective: Objective, features: FeatureCache) -> torch.Tensor | None:
        found = text_tower_plausibility(
            objective, features, self.texts, self.tokenizer, self.batch_size, self.image_size, self.pipeline.precision
        )
        if found.scores is None:
            if found.reason not in self.notes:
                self.notes.append(found.reason)
                warnings.warn(f"winoground: no blind_text baseline: {found.reason}", stacklevel=2)
            return None
        return found.scores.view(-1, 2)

    def _means(self, prefix: str, name: str, values: torch.Tensor) -> dict[str, float]:
        """``winoground/<prefix><name>`` overall and per collapsed tag."""
        values = values.double().numpy()
        out = {f"winoground/{prefix}{name}": float(values.mean())}
        for tag in sorted(set(self.tags)):
            chosen = np.array([t == tag for t in self.tags])
            out[f"winoground/{tag}/{prefix}{name}"] = float(values[chosen].mean())
        return out

    @torch.no_grad()
    def __call__(self, objective: Objective, features: FeatureCache) -> dict[str, float]:
        scores = self._scores(objective, features)
        out = self._means("", "text", text_credit(scores))
        out |= self._means("", "image", image_credit(scores))
        out |= self._means("", "group", group_credit(scores))
        blind = {"blind_text/": self._blind_text(objective, features), "blind_ngram/": self.ngram_scores}
        for prefix, caption_scores in blind.items():
            if caption_scores is not None:
                out |= self._means(prefix, "text", text_credit(blind_matrix(caption_scores)))
                out[f"winoground/{prefix}prior_agreement"] = prior_agreement(scores, caption_scores).mean().item()
        out["winoground/same_caption"] = same_caption(scores).mean().item()
        return out


class WinogroundTask(TaskConfig):
    """Winoground on local files: text, image and group scores beside the blind text score."""

    type: Literal["winoground"] = Field("winoground", description="the task type")
    path_fields: ClassVar[tuple[str, ...]] = ("root", "corpus")
    root: str = Field(description="folder holding examples.jsonl and images/ (as the Hugging Face release ships them)")
    n: int | None = Field(None, ge=1, description="first examples (default all)")
    corpus: str | None = Field(
        None,
        description="caption corpus for the n-gram blind baseline: text (one caption a line), JSONL or JSON list, "
        "or COCO caption annotations (default: no n-gram baseline)",
    )
    ngram_order: int = Field(3, ge=1, le=6, description="order of the n-gram baseline (3 = trigram)")

    def build(self, context: EvalContext) -> list[Evaluator]:
        items = read_winoground(self.root, self.n)
        ngram = NgramLM.from_file(self.corpus, self.ngram_order) if self.corpus else None
        pipeline = context.pipeline()
        return [WinogroundEvaluator(items, context.tokenizer, pipeline, context.batch_size, context.image_size, ngram)]
