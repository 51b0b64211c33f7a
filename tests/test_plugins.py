"""A new part plugs in by its own file and one registry line: a toy evaluation task, declared
here, runs inside a training run on its own schedule."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import Field

from vislang.eval import TASKS, EvalContext, TaskConfig
from vislang.experiment import build_config
from vislang.train.loop import train


class LogitScaleTask(TaskConfig):
    """Reports the objective's temperature and how often it was called."""

    type: Literal["toy_logit_scale"] = Field("toy_logit_scale", description="the task type")
    offset: float = Field(0.0, description="added to the reported scale")

    def build(self, context: EvalContext) -> list:
        return [LogitScaleEvaluator(self.offset, context.batch_size)]


class LogitScaleEvaluator:
    def __init__(self, offset: float, batch_size: int) -> None:
        self.offset, self.batch_size, self.calls = offset, batch_size, 0

    def __call__(self, objective, features) -> dict[str, float]:
        self.calls += 1
        assert not objective.training  # evaluators run in eval mode
        scale = objective.model.scale().item() + self.offset
        return {"toy/logit_scale": scale, "toy/calls": float(self.calls), "toy/batch_size": float(self.batch_size)}


def test_a_registered_task_runs_inside_training(tmp_path, tiny_overrides, monkeypatch):
    monkeypatch.setitem(TASKS, "toy_logit_scale", LogitScaleTask)
    tasks = "eval.tasks=[{type: toy_logit_scale, every: 4, offset: 1.0}, {type: zeroshot, n: 20, every: 6}]"
    cfg = build_config({}, tiny_overrides + [tasks])
    assert isinstance(cfg.eval.tasks[0], LogitScaleTask) and cfg.eval.tasks[0].offset == 1.0
    metrics = train(cfg, tmp_path / "run", quiet=True)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    toy_steps = [r["step"] for r in records if "toy/calls" in r]
    zeroshot_steps = sorted({r["step"] for r in records if "zeroshot/shape/top1" in r})
    assert toy_steps == [4, 8, 12] and zeroshot_steps == [6, 12]  # each on its own schedule; the last step runs all
    assert metrics["toy/calls"] == 3.0 and metrics["toy/batch_size"] == 32.0
    assert metrics["toy/logit_scale"] > 1.0
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "toy_logit_scale" in saved and "offset: 1.0" in saved
