"""The evaluation-task protocol: a task type is a config section that builds evaluators.

``eval.tasks`` lists tasks by ``type``; each type is one module declaring a :class:`TaskConfig`
subclass whose :meth:`~TaskConfig.build` returns evaluators, and one line in
:data:`vislang.eval.TASKS`. An evaluator is any callable ``evaluator(objective) -> {name: float}``;
the same evaluators run inside training (every ``every`` steps, default ``train.eval_every``)
and from ``vislang eval``. What a task needs from the run (tokenizer, image preprocessing, the
built-in world, a way to open a held-out source) comes in an :class:`EvalContext`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from vislang.config import Section, SourceConfig, WorldConfig
from vislang.data import build_world
from vislang.data.source import Source
from vislang.data.world import World
from vislang.objectives import Objective

Evaluator = Callable[[Objective], dict[str, float]]


@dataclass
class EvalContext:
    """What evaluators take from the run they evaluate."""

    tokenizer: Callable
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    batch_size: int
    seed: int
    world_config: WorldConfig
    open_source: Callable[[SourceConfig], Source]  # a held-out source, decoded as evaluation decodes
    resize_mode: str = "shortest"
    interpolation: str = "bicubic"
    _world: World | None = field(default=None, repr=False)

    def world(self) -> World:
        """The built-in world (test split), made once for every task that uses it."""
        if self._world is None:
            self._world = build_world(self.world_config, self.image_size)
        return self._world

    def common(self) -> dict[str, Any]:
        """The keyword arguments every image-text evaluator takes."""
        return dict(tokenizer=self.tokenizer, mean=self.mean, std=self.std, batch_size=self.batch_size)


class TaskConfig(Section):
    """One entry of ``eval.tasks``."""

    type: str = Field(description="the task type (see vislang.eval.TASKS)")
    every: int | None = Field(
        None, ge=1, description="steps between evaluations in training (default train.eval_every)"
    )

    def build(self, context: EvalContext) -> list[Evaluator]:
        raise NotImplementedError

    def metric_prefix(self) -> str:
        """The first part of this task's metric names (two tasks may not share one)."""
        return self.type


@dataclass
class Scheduled:
    """An evaluator with its task's schedule."""

    evaluator: Evaluator
    every: int | None

    def __call__(self, objective: Objective) -> dict[str, float]:
        return self.evaluator(objective)

    def due(self, step: int, default_every: int, last: bool) -> bool:
        return last or step % (self.every or default_every) == 0


def build_evaluators(tasks: list[TaskConfig], context: EvalContext) -> list[Scheduled]:
    """Every task's evaluators in the order of ``tasks``, with its schedule."""
    return [Scheduled(evaluator, task.every) for task in tasks for evaluator in task.build(context)]
