"""A suite: a file of evaluation tasks run on one model, with one result per evaluator.

A suite file is YAML that starts with its command, like every config::

    # vislang eval --suite suite.yaml MODEL --out results/
    batch_size: 256
    tasks:
      - {type: zeroshot, dataset: {format: imagefolder, path: pets/}}
      - {type: retrieval, dataset: {format: karpathy, path: dataset_coco.json, images: coco/}}

Tasks are the registry's (:data:`vislang.eval.TASKS`), the same ones ``eval.tasks`` lists in a
run config; relative paths are relative to the suite file. The whole suite shares one feature
cache, so zero-shot, retrieval and probes on the same images encode them once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from tqdm import tqdm

from vislang.config.base import Section, build_section, read_config_file
from vislang.errors import ConfigError
from vislang.eval import TaskEntry, evaluate
from vislang.eval.encode import FeatureCache
from vislang.eval.tasks import EvalContext, TaskConfig, distinct_prefixes
from vislang.objectives import Objective

# The metric that stands for an evaluator in a summary: the first of these names (the last part
# of a metric's name, matched exactly) that the evaluator reports.
MAIN_METRICS = ("top1", "mean_R@1", "acc1", "mean_acc", "group", "acc", "CIDEr", "macro_acc")
# Main metrics that are not fractions in [0, 1]: shown, but left out of the suite's average.
UNBOUNDED_METRICS = ("CIDEr",)


class SuiteConfig(Section):
    """A suite file: evaluation tasks and how to run them."""

    batch_size: int = Field(256, ge=1, description="images or texts encoded at a time")
    workers: int = Field(2, ge=0, description="image-decoding loader workers")
    tasks: list[TaskEntry] = Field(
        min_length=1, description="the tasks, by type (see vislang.eval.TASKS); the same entries as eval.tasks"
    )

    @model_validator(mode="after")
    def _distinct(self) -> SuiteConfig:
        distinct_prefixes(self.tasks)
        return self


def shipped_suites() -> list[str]:
    """Names of the suite files that ship with vislang (``vislang eval --suite world``)."""
    return sorted(
        p.name[: -len(".yaml")] for p in resources.files("vislang.eval.suites").iterdir() if p.name.endswith(".yaml")
    )


def suite_path(name_or_path: str) -> Path:
    """A suite file's path: a file, or the name of a shipped suite."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if name_or_path in shipped_suites():
        return Path(str(resources.files("vislang.eval.suites") / f"{name_or_path}.yaml"))
    raise ConfigError(f"{name_or_path}: no such suite file (shipped suites: {', '.join(shipped_suites())})")


def read_suite(name_or_path: str, overrides: list[str] | None = None) -> SuiteConfig:
    """A validated suite with its paths made absolute (one-line errors naming the file and key)."""
    path = suite_path(name_or_path)
    suite = build_section(SuiteConfig, read_config_file(path), overrides or [], str(path))
    return suite.model_copy(update={"tasks": [task.resolve(path.parent.resolve()) for task in suite.tasks]})


@dataclass
class TaskResult:
    """One evaluator's outcome: ``name`` is its metric prefix (``zeroshot/pets``)."""

    name: str
    type: str
    metrics: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    images_encoded: int = 0
    main: str | None = None  # the metric the evaluator names as its main one
    dataset: str = ""  # the dataset's own name (CLIP_benchmark's "dataset" field); default: name

    def main_metric(self) -> str | None:
        if self.main in self.metrics:
            return self.main
        for wanted in MAIN_METRICS:
            for key in self.metrics:
                if key.rsplit("/", 1)[-1] == wanted:
                    return key
        return None


def run_suite(objective: Objective, tasks: list[TaskConfig], context: EvalContext) -> list[TaskResult]:
    """Every task's evaluators, one result each, sharing one feature cache."""
    features, results = FeatureCache(), []
    evaluators = [(task, evaluator) for task in tasks for evaluator in task.build(context)]
    for task, evaluator in tqdm(evaluators, desc="suite", unit="task", disable=not context.progress):
        start, encoded = time.perf_counter(), features.encoded_images
        metrics = evaluate(objective, [evaluator], features)
        name = getattr(evaluator, "name", task.metric_prefix())
        details = evaluator.details() if hasattr(evaluator, "details") else {}
        results.append(
            TaskResult(
                name,
                task.type,
                {_strip(key, name): value for key, value in metrics.items()},
                details,
                time.perf_counter() - start,
                features.encoded_images - encoded,
                getattr(evaluator, "main", None),
                getattr(evaluator, "dataset", name),
            )
        )
    return results


def _strip(key: str, prefix: str) -> str:
    return key[len(prefix) + 1 :] if key.startswith(prefix + "/") else key
