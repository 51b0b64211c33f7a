"""The world's zero-shot task with per-class descriptions (CuPL): the classifier's texts are the
file's descriptions, alone or with the templates, under a prefix of their own."""

from __future__ import annotations

import json

import pytest

from vislang.data.world import SHAPES
from vislang.errors import ConfigError
from vislang.eval.tasks import EvalContext
from vislang.eval.zeroshot import ZeroShotTask
from vislang.experiment import build_config, eval_context
from vislang.tokenizers import BPETokenizer


def _context() -> EvalContext:
    cfg = build_config({})
    return eval_context(cfg, BPETokenizer.train(["a red circle"] * 5, 300, cfg.model.text.context_length))


@pytest.mark.parametrize("prompts", ["descriptions", "both"])
def test_world_zeroshot_classifies_with_the_descriptions_file(tmp_path, prompts):
    described = {s: [f"{s} one", f"{s} two"] for s in SHAPES}
    (tmp_path / "d.json").write_text(json.dumps(described))
    task = ZeroShotTask(
        dataset="world", n=4, world_sets=["shape"], descriptions=str(tmp_path / "d.json"), prompts=prompts
    )
    (evaluator,) = task.build(_context())
    assert evaluator.name == f"zeroshot_{prompts}/shape"
    texts = evaluator.data.class_prompts()
    templates = [t.format(SHAPES[0]) for t in evaluator.data.templates] if prompts == "both" else []
    assert texts[0] == templates + described[SHAPES[0]]


def test_descriptions_need_the_world_and_a_file():
    with pytest.raises(ValueError, match="needs descriptions"):
        ZeroShotTask(dataset="world", prompts="descriptions")
    with pytest.raises(ConfigError, match="descriptions"):
        build_config(
            {}, ["eval.tasks=[{type: zeroshot, dataset: {format: imagefolder, path: x}, descriptions: d.json}]"]
        )
