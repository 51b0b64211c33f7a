"""The objective interface: what the one training loop and the evaluators need from a paradigm.

An objective owns its model, computes its loss on a dict batch (returning named tensors with
the total under ``"loss"``), reports scalars worth logging, and exposes the scoring functions
evaluators call. The loop never asks which paradigm it runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from vislang.classes import ClassTask
from vislang.config import ModelConfig, ParamRule, Section, TrainConfig


class ObjectiveConfig(Section):
    """The ``objective`` section: which paradigm is trained, with its own loss and architecture
    fields. Each objective file declares a subclass; the class attributes below say what the run
    config may combine it with, so nothing elsewhere lists objective names."""

    kind: str = Field(description="the objective (see vislang.objectives.OBJECTIVES)")

    contrastive: ClassVar[bool] = False  # scored by embedding similarity (report wording, CiT)
    accepts_hard_negatives: ClassVar[bool] = False  # data.hard_negatives (negative captions in the batch)
    accepts_cit: ClassVar[bool] = False  # data.cit (curation in training needs a text embedding)
    accepts_pretrained_text: ClassVar[bool] = False  # model.text.pretrained (a Hugging Face text tower)
    needs_labels: ClassVar[bool] = False  # batches must carry ``label`` (labelled sources only)
    needs_classes: ClassVar[bool] = False  # built with the labelled source's ClassTask (a head over its classes)
    # the input sizes a stage of train.stages may change mid-run (a part sized by the others is not resized)
    stage_inputs: ClassVar[frozenset[str]] = frozenset({"image_size", "context_length"})

    def check(self, model: ModelConfig, train: TrainConfig) -> None:
        """Raise ValueError for a combination with other sections that this objective cannot train."""
        if model.text.pretrained and not self.accepts_pretrained_text:
            raise ValueError(f"model.text.pretrained is a text tower for two-tower objectives, not {self.kind!r}")

    def param_rules(self) -> list[ParamRule]:
        """Rules the objective itself brings (CoOp and head-only fine-tuning freeze the towers),
        applied after the towers' lock shorthands and before ``train.param_rules``."""
        return []

    def build(self, model: ModelConfig, vocab_size: int, pad_id: int, classes: ClassTask | None = None) -> Objective:
        """The objective with a freshly initialised model; ``classes`` is given to objectives that
        ``needs_classes`` (the training source's, or the one saved with the weights)."""
        raise NotImplementedError


@dataclass
class StartContext:
    """What an objective may use once, on a fresh run, after ``train.init_from`` has loaded its
    weights and before adapters, parameter rules and the optimizer: a head initialised from the
    zero-shot classifier needs the tokenizer, a linear probe needs the labelled training images."""

    tokenize: Callable[[Sequence[str]], torch.Tensor]
    device: torch.device
    # up to n labelled training samples in their first-epoch order, as (normalised images, labels)
    # batches of at most batch_size: labelled_batches(n, batch_size)
    labelled_batches: Callable[[int, int], Iterator[tuple[torch.Tensor, torch.Tensor]]] | None = None
    # a solver for a head fitted on features (LP-FT): fit_logistic(x, y, n_classes, l2) -> (W, b),
    # given by the training layer from the evaluation's probe (vislang.eval.probes)
    fit_logistic: Callable[[torch.Tensor, torch.Tensor, int, float], tuple[torch.Tensor, torch.Tensor]] | None = None


class Objective(nn.Module, ABC):
    """Base class; subclasses set ``self.model`` and implement :meth:`loss`.

    ``group``: the process group whose ranks share contrastive negatives (set by the loop under
    torchrun; None in one process). ``exact_accumulation``: the loss couples samples only through
    :meth:`embed`, so :mod:`vislang.train.accumulate` can accumulate micro-batches exactly.
    """

    model: nn.Module
    group = None
    exact_accumulation = False
    frozen_norms: tuple[nn.Module, ...] = ()  # locked BatchNorms: they stay in eval mode
    classes: ClassTask | None = None  # what :meth:`classify` predicts (objectives that need classes)
    # names (prefixes) of the tensors :meth:`start` sets afresh: train.init_from does not load them,
    # so a start from a classifier of another task (another class count) is not refused for them
    set_by_start: tuple[str, ...] = ()

    def train(self, mode: bool = True) -> Objective:
        super().train(mode)
        for norm in self.frozen_norms:
            norm.eval()
        return self

    @abstractmethod
    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Loss parts on one batch; ``"loss"`` is the total that is back-propagated."""

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The loss, so that DistributedDataParallel wraps an objective like any module."""
        return self.loss(batch)

    def embed(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-sample embeddings the loss needs (``exact_accumulation`` objectives only)."""
        raise NotImplementedError

    def loss_from_embeddings(self, embeddings: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The loss of :meth:`embed`'s output (``exact_accumulation`` objectives only)."""
        raise NotImplementedError

    def log_values(self) -> dict[str, float]:
        """Scalars to log beside the loss (temperature, bias, ...)."""
        return {}

    def start(self, context: StartContext) -> list[str]:
        """Once, on a fresh run, before the first step (see :class:`StartContext`); returns lines
        for the run's log. Nothing to do for most objectives."""
        return []

    def classify(self, image_features: torch.Tensor) -> torch.Tensor | None:
        """Logits [N, C] over :attr:`classes` from :meth:`image_features` (a trained head or learned
        prompts), or None for an objective without a classifier of its own."""
        return None

    # -- scoring for evaluators ---------------------------------------------------------------
    # Evaluators see images and texts through features and a pairwise score, so a paradigm that
    # does not embed (a captioner scoring log-likelihoods) can implement the same three methods.

    @abstractmethod
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Per-image representation [N, ...] used by :meth:`scores`."""

    @abstractmethod
    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-text representation [M, ...] used by :meth:`scores`."""

    @abstractmethod
    def scores(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Similarity of every image to every text: [N, M], higher = better match."""

    def pair_scores(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Score of image i against each of its own K candidates: [N], [N, K, ...] -> [N, K]."""
        n = text_features.shape[0]
        return torch.stack([self.scores(image_features[i : i + 1], text_features[i])[0] for i in range(n)])

    def ensemble_texts(self, text_features: torch.Tensor) -> torch.Tensor:
        """Combine [T, C, ...] features of T prompt templates for C classes into [C, ...]."""
        return text_features.mean(dim=0)

    def captioner(self) -> nn.Module | None:
        """The model that writes captions (it has ``image_context`` and ``decoder``), or None
        for an objective that only embeds (captioning, blank-image baselines, ``vislang caption``)."""
        return None
