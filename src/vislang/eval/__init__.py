"""Evaluation: task types by name, and running evaluators on an objective.

Every evaluator follows one protocol, ``evaluator(objective, features) -> {metric_name: float}``
(``features``: the :class:`~vislang.eval.encode.FeatureCache` every evaluator of one evaluation
shares), and the same objects run inside training and from ``vislang eval`` (``--suite``). Metric names are slash-separated:
``zeroshot/<task>/top1``, ``retrieval/text_to_image/R@1``, ``compositional/<probe>/acc``,
``head/<task>/top1`` (the objective's own classifier).
A new task type is a module with its :class:`~vislang.eval.tasks.TaskConfig` and one line in
:data:`TASKS`.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
from pydantic import BeforeValidator, SerializeAsAny

from vislang.config.base import pick_registered
from vislang.eval.aro import AroTask
from vislang.eval.captioning import CaptioningTask
from vislang.eval.compositional import CompositionalTask
from vislang.eval.encode import FeatureCache
from vislang.eval.head import HeadTask
from vislang.eval.probe import ProbeTask
from vislang.eval.retrieval import RetrievalTask
from vislang.eval.sugarcrepe import SugarCrepeTask
from vislang.eval.tasks import EvalContext, Evaluator, Scheduled, TaskConfig, build_evaluators
from vislang.eval.video import SameSubjectTask, TemporalProbeTask, VideoRetrievalTask
from vislang.eval.winoground import WinogroundTask
from vislang.eval.zeroshot import ZeroShotTask
from vislang.objectives import Objective

TASKS: dict[str, type[TaskConfig]] = {
    "zeroshot": ZeroShotTask,
    "retrieval": RetrievalTask,
    "compositional": CompositionalTask,
    "aro": AroTask,
    "probe": ProbeTask,
    "captioning": CaptioningTask,
    "sugarcrepe": SugarCrepeTask,
    "winoground": WinogroundTask,
    "head": HeadTask,
    "video_retrieval": VideoRetrievalTask,
    "same_subject": SameSubjectTask,
    "temporal": TemporalProbeTask,
}


def _registered(value: Any) -> Any:
    return pick_registered(TASKS, "type", "evaluation task type", value)


# One entry of a task list (eval.tasks, a suite file's tasks): validated as the registered type
# its ``type`` names, item by item, so an error's key holds the item's index.
TaskEntry = Annotated[SerializeAsAny[TaskConfig], BeforeValidator(_registered)]


def evaluate(
    objective: Objective, evaluators: list[Evaluator], features: FeatureCache | None = None
) -> dict[str, float]:
    """Run every evaluator in eval mode, restoring the objective's mode afterwards; evaluators
    share one feature cache (``features``, or a fresh one), so images two tasks use are encoded once."""
    was_training = objective.training
    objective.eval()
    features = FeatureCache() if features is None else features
    try:
        with torch.no_grad():
            return {name: value for evaluator in evaluators for name, value in evaluator(objective, features).items()}
    finally:
        objective.train(was_training)


__all__ = [
    "TASKS",
    "EvalContext",
    "Evaluator",
    "FeatureCache",
    "Scheduled",
    "TaskConfig",
    "build_evaluators",
    "evaluate",
]
