"""Evaluation: task types by name, and running evaluators on an objective.

Every evaluator follows one protocol, ``evaluator(objective) -> {metric_name: float}``, and the
same objects run inside training and from ``vislang eval``. Metric names are slash-separated:
``zeroshot/<task>/top1``, ``retrieval/text_to_image/R@1``, ``compositional/<probe>/acc``.
A new task type is a module with its :class:`~vislang.eval.tasks.TaskConfig` and one line in
:data:`TASKS`.
"""

from __future__ import annotations

import torch

from vislang.eval.aro import AroTask
from vislang.eval.compositional import CompositionalTask
from vislang.eval.retrieval import RetrievalTask
from vislang.eval.tasks import EvalContext, Evaluator, Scheduled, TaskConfig, build_evaluators
from vislang.eval.zeroshot import ZeroShotTask
from vislang.objectives import Objective

TASKS: dict[str, type[TaskConfig]] = {
    "zeroshot": ZeroShotTask,
    "retrieval": RetrievalTask,
    "compositional": CompositionalTask,
    "aro": AroTask,
}


def evaluate(objective: Objective, evaluators: list[Evaluator]) -> dict[str, float]:
    """Run every evaluator in eval mode, restoring the objective's mode afterwards."""
    was_training = objective.training
    objective.eval()
    try:
        with torch.no_grad():
            return {name: value for evaluator in evaluators for name, value in evaluator(objective).items()}
    finally:
        objective.train(was_training)


__all__ = ["TASKS", "EvalContext", "Evaluator", "Scheduled", "TaskConfig", "build_evaluators", "evaluate"]
