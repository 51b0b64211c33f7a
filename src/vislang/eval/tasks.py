"""The evaluation-task protocol: a task type is a config section that builds evaluators.

``eval.tasks`` (and a suite file's ``tasks``) lists tasks by ``type``; each type is one module
declaring a :class:`TaskConfig` subclass whose :meth:`~TaskConfig.build` returns evaluators, and
one line in :data:`vislang.eval.TASKS`. An evaluator is any callable
``evaluator(objective, features) -> {name: float}``, where ``features`` is the
:class:`~vislang.eval.encode.FeatureCache` shared by every evaluator of one evaluation; the same
evaluators run inside training (every ``every`` steps, default ``train.eval_every``) and from
``vislang eval``. What a task needs from the run (tokenizer, image preprocessing, the built-in
world, a way to open a held-out source) comes in an :class:`EvalContext`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from vislang.config import Section, SourceConfig, WorldConfig
from vislang.data import build_world
from vislang.data.source import Source
from vislang.data.transforms import ImageTransform
from vislang.data.world import World
from vislang.eval.encode import FeatureCache, ImagePipeline
from vislang.objectives import Objective

Evaluator = Callable[[Objective, FeatureCache], dict[str, float]]
Role = Literal["id", "shift", "unseen"]
ROLES: tuple[str, ...] = ("id", "shift", "unseen")


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
    workers: int = 0  # image-decoding loader workers
    progress: bool = False  # progress bars while encoding
    precision: str = "fp32"  # autocast precision: fp32, bf16, fp16
    frames: int = 0  # the run's data.frames: clips of this length for video tasks on a table (0: stills)
    _world: World | None = field(default=None, repr=False)

    def world(self) -> World:
        """The built-in world (test split), made once for every task that uses it."""
        if self._world is None:
            self._world = build_world(self.world_config, self.image_size)
        return self._world

    def pipeline(self) -> ImagePipeline:
        """The model's evaluation preprocessing (PIL resampling, as OpenCLIP's), batched."""
        transform = ImageTransform(self.image_size, self.resize_mode, interpolation=self.interpolation, pil_resize=True)
        return ImagePipeline(
            transform, tuple(self.mean), tuple(self.std), self.batch_size, self.workers, self.progress, self.precision
        )

    def common(self) -> dict[str, Any]:
        """The keyword arguments every image-text evaluator takes."""
        return dict(tokenizer=self.tokenizer, mean=self.mean, std=self.std, batch_size=self.batch_size)


class TaskConfig(Section):
    """One entry of ``eval.tasks``."""

    type: str = Field(description="the task type (see vislang.eval.TASKS)")
    every: int | None = Field(
        None, ge=1, description="steps between evaluations in training (default train.eval_every)"
    )
    role: Role | None = Field(
        None,
        description="what the task is to a fine-tune: id (the fine-tuning task, in distribution), shift (the "
        "same task under distribution shift) or unseen (a task the fine-tune never trained on); groups report.md's "
        "fine-tuning cost and gives vislang wise its ID and shift tasks",
    )

    path_fields: ClassVar[tuple[str, ...]] = ()  # fields holding file paths (made absolute by resolve)

    def build(self, context: EvalContext) -> list[Evaluator]:
        raise NotImplementedError

    def metric_prefix(self) -> str:
        """The first part of this task's metric names (two tasks may not share one)."""
        return self.type

    def resolve(self, base: Path) -> TaskConfig:
        """A copy whose relative paths are relative to ``base`` (a suite file's folder), nested
        dataset sections included."""
        update: dict[str, Any] = {}
        for name in self.path_fields:
            value = getattr(self, name)
            if isinstance(value, str) and value:
                path = Path(value).expanduser()
                update[name] = str(path if path.is_absolute() else base / path)
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, Section) and hasattr(value, "resolve"):
                update[name] = value.resolve(base)
        return self.model_copy(update=update)


@dataclass
class Scheduled:
    """An evaluator with its task's schedule."""

    evaluator: Evaluator
    every: int | None

    def __call__(self, objective: Objective, features: FeatureCache) -> dict[str, float]:
        return self.evaluator(objective, features)

    def due(self, step: int, default_every: int, last: bool) -> bool:
        return last or step % (self.every or default_every) == 0


def distinct_prefixes(tasks: list[TaskConfig]) -> None:
    """Refuse a task list (``eval.tasks``, a suite file's) in which two tasks write the same metrics."""
    prefixes = [task.metric_prefix() for task in tasks]
    twice = sorted({p for p in prefixes if prefixes.count(p) > 1})
    if twice:
        raise ValueError(f"two tasks would write the same metrics {twice[0]}/...; give one a name")


def build_evaluators(tasks: list[TaskConfig], context: EvalContext) -> list[Scheduled]:
    """Every task's evaluators in the order of ``tasks``, with its schedule."""
    return [Scheduled(evaluator, task.every) for task in tasks for evaluator in task.build(context)]


@dataclass(frozen=True)
class ResultRole:
    """One result a task list gives (``zeroshot_sketch/shape``: an evaluator's name), its task's
    metric prefix (``zeroshot_sketch``) and that task's role."""

    name: str
    prefix: str
    role: str | None

    def within(self) -> str:
        """The name within its task (``shape``; "" for a task of one result): what pairs a
        result with the same result of another task (an ID result with its shifts)."""
        return self.name[len(self.prefix) + 1 :] if self.name.startswith(self.prefix + "/") else ""


def result_roles(tasks: list[TaskConfig], context: EvalContext) -> list[ResultRole]:
    """Every result ``tasks`` will give, with its task's role, known before anything is evaluated."""
    return [
        ResultRole(getattr(evaluator, "name", task.metric_prefix()), task.metric_prefix(), task.role)
        for task in tasks
        for evaluator in task.build(context)
    ]
