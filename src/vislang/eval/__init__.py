"""Evaluators share one protocol: ``evaluator(objective) -> {metric_name: float}``.

The same objects run inside training (every ``train.eval_every`` steps) and from
``vislang eval``. Metric names are slash-separated: ``zeroshot/<task>/top1``,
``retrieval/text_to_image/R@1``, ``compositional/<probe>/acc``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vislang.config import RunConfig
from vislang.data import build_source, build_world, source_retrieval_set
from vislang.data.world_tasks import classification_sets, probe_sets, retrieval_set
from vislang.eval.aro import AroEvaluator, load_aro
from vislang.eval.compositional import ProbeEvaluator
from vislang.eval.retrieval import RetrievalEvaluator
from vislang.eval.zeroshot import ZeroShotEvaluator
from vislang.objectives.base import Objective

Evaluator = Callable[[Objective], dict[str, float]]


def build_evaluators(cfg: RunConfig, tokenizer) -> list[Evaluator]:
    """The world's test-split tasks enabled in ``cfg.eval``, with data generated once, plus ARO
    sets and retrieval on held-out sources."""
    world, e, v = build_world(cfg), cfg.eval, cfg.model.vision
    common = dict(tokenizer=tokenizer, mean=v.image_mean, std=v.image_std, batch_size=e.batch_size)
    evaluators: list[Evaluator] = []
    if e.zeroshot:
        evaluators += [
            ZeroShotEvaluator(task, data, **common) for task, data in classification_sets(world, e.n_classify).items()
        ]
    if e.retrieval:
        evaluators.append(RetrievalEvaluator(retrieval_set(world, e.n_retrieval), **common))
    for i, s in enumerate(e.retrieval_sources):
        data = source_retrieval_set(build_source(cfg, s, train=False), e.n_retrieval, cfg.train.seed)
        name = f"retrieval_{s.name or f'{s.kind}{i}'}"
        evaluators.append(RetrievalEvaluator(data, **common, name=name))
    if e.compositional:
        evaluators += [ProbeEvaluator(probe, data, **common) for probe, data in probe_sets(world, e.n_probe).items()]
    for aro in e.aro:
        items = load_aro(aro.kind, aro.annotations, aro.images, cfg.train.seed)
        evaluators.append(
            AroEvaluator(
                aro.kind,
                items,
                tokenizer,
                v.image_size,
                v.image_mean,
                v.image_std,
                e.batch_size,
                aro.min_group,
                cfg.data.resize_mode,
                cfg.data.interpolation,
            )
        )
    return evaluators


def evaluate(objective: Objective, evaluators: list[Evaluator]) -> dict[str, float]:
    """Run every evaluator in eval mode, restoring the objective's mode afterwards."""
    was_training = objective.training
    objective.eval()
    try:
        with torch.no_grad():
            return {name: value for evaluator in evaluators for name, value in evaluator(objective).items()}
    finally:
        objective.train(was_training)
