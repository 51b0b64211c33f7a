"""The ``head`` task: the objective's own classifier scored on labelled images. Its numbers equal
a direct computation from the head's weights, it shares image features with zero-shot, and it
refuses a model without a classifier or with other classes in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from conftest import TINY
from vislang.classes import ClassTask
from vislang.data.world import COLORS, SHAPES
from vislang.data.world_tasks import COLOR_TEMPLATES
from vislang.errors import ConfigError
from vislang.eval import FeatureCache, build_evaluators, evaluate
from vislang.eval.head import HeadTask
from vislang.eval.zeroshot import ZeroShotTask
from vislang.experiment import build_config, eval_context
from vislang.objectives import Objective
from vislang.tokenizers import BPETokenizer

TEXTS = [f"a photo of a {c} {s}" for c in COLORS for s in SHAPES] * 10


class TinyHeadObjective(Objective):
    """An image embedding of the mean pixel, a bag-of-tokens text embedding and a linear head
    over ``classes``: enough for zero-shot and the head task, nothing else."""

    def __init__(self, classes: ClassTask | None, vocab_size: int, dim: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.classes = classes
        self.model = nn.ModuleDict({"image": nn.Linear(3, dim), "text": nn.Embedding(vocab_size, dim)})
        self.head = nn.Linear(dim, len(classes)) if classes is not None else None

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss": self.image_features(batch["image"]).sum()}

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.model["image"](images.mean(dim=(2, 3)))

    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model["text"](tokens).mean(dim=1)

    def scores(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        return F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T

    def classify(self, image_features: torch.Tensor) -> torch.Tensor | None:
        return None if self.head is None else self.head(image_features)


@pytest.fixture(scope="module")
def setup():
    cfg = build_config({}, TINY)
    tokenizer = BPETokenizer.train(TEXTS, 300, cfg.model.text.context_length)
    return cfg, tokenizer, eval_context(cfg, tokenizer, batch_size=16)


def _world_colors(tokenizer) -> TinyHeadObjective:
    return TinyHeadObjective(ClassTask(tuple(COLORS), COLOR_TEMPLATES, "world_color"), tokenizer.vocab_size)


def _by_hand(objective: TinyHeadObjective, features: torch.Tensor, labels: np.ndarray) -> tuple[float, float, float]:
    """top-1, top-5 and mean per-class recall from the head's weights, without classify()."""
    logits = features.double() @ objective.head.weight.double().T + objective.head.bias.double()
    predicted = logits.argmax(dim=1).numpy()
    top5 = logits.topk(5, dim=1).indices.numpy()
    recall = np.mean([np.mean(predicted[labels == c] == c) for c in np.unique(labels)])
    return float(np.mean(predicted == labels)), float(np.mean((top5 == labels[:, None]).any(axis=1))), float(recall)


def test_head_accuracy_equals_a_direct_computation_and_shares_features_with_zeroshot(setup):
    cfg, tokenizer, context = setup
    objective = _world_colors(tokenizer).eval()
    head = HeadTask(world_task="color", n=40)
    evaluators = build_evaluators([ZeroShotTask(n=40), head], context)
    features = FeatureCache()
    metrics = evaluate(objective, evaluators, features)
    # zero-shot's two sets (all scenes, the held-out pairs) are the head's images: encoded once
    assert features.encoded_images == 2 * 40
    heads = [e.evaluator for e in evaluators if e.evaluator.name.startswith("head/")]
    assert [e.name for e in heads] == ["head/color", "head/color_unseen"]
    for evaluator in heads:
        images = features.images(objective, evaluator.data.images, evaluator.pipeline)
        top1, top5, recall = _by_hand(objective, images, np.asarray(evaluator.data.labels))
        assert metrics[f"{evaluator.name}/top1"] == pytest.approx(top1, abs=1e-6)
        assert metrics[f"{evaluator.name}/top5"] == pytest.approx(top5, abs=1e-6)
        assert metrics[f"{evaluator.name}/mean_per_class_recall"] == pytest.approx(recall, abs=1e-6)
        assert evaluator.details()["predictions"] is not None
    assert 0.0 < metrics["head/color/top1"] < 1.0  # a number that a wrong computation would move
    with torch.no_grad():  # a different head, different numbers: the metric reads the head
        objective.head.weight.copy_(torch.roll(objective.head.weight, 1, dims=0))
    assert evaluate(objective, build_evaluators([head], context))["head/color/top1"] != metrics["head/color/top1"]


def test_a_rendering_is_named_like_zeroshot_and_defaults_to_shape(setup):
    cfg, tokenizer, context = setup
    task = HeadTask(n=10, rendering="sketch", role="shift")
    assert task.metric_prefix() == "head_sketch"
    shapes = TinyHeadObjective(ClassTask(tuple(SHAPES), ("a {}",), "world_shape"), tokenizer.vocab_size)
    metrics = evaluate(shapes, build_evaluators([task], context))
    assert {"head_sketch/shape/top1", "head_sketch/shape_unseen/top1"} <= set(metrics)


def _folder(root, classes=("red", "green", "blue"), per_class=3) -> str:
    colours = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (40 + i, 36), colours[name]).save(root / name / f"{i}.png")
    return str(root)


def test_a_dataset_under_five_classes_has_no_top5(setup, tmp_path):
    cfg, tokenizer, context = setup
    path = _folder(tmp_path / "colours")
    task = build_config({}, [*TINY, f"eval.tasks=[{{type: head, dataset: {{format: imagefolder, path: {path}}}}}]"])
    (evaluator,) = [s.evaluator for s in build_evaluators(task.eval.tasks, context)]
    names = tuple(evaluator.data.classnames)  # the folder's own order
    objective = TinyHeadObjective(ClassTask(names, ("a {} thing",), "colours"), tokenizer.vocab_size)
    metrics = evaluate(objective, [evaluator])
    assert set(metrics) == {"head/colours/top1", "head/colours/mean_per_class_recall"}
    images = FeatureCache().images(objective, evaluator.data.images, evaluator.pipeline)
    assert metrics["head/colours/top1"] == pytest.approx(_by_hand_top1(objective, images, evaluator.data.labels))


def _by_hand_top1(objective: TinyHeadObjective, features: torch.Tensor, labels) -> float:
    logits = features @ objective.head.weight.T + objective.head.bias
    return float((logits.argmax(dim=1).numpy() == np.asarray(labels)).mean())


def test_other_classes_or_no_classifier_are_refused_in_one_line(setup):
    cfg, tokenizer, context = setup
    evaluator = build_evaluators([HeadTask(world_task="color", n=5)], context)[0].evaluator
    shapes = TinyHeadObjective(ClassTask(tuple(SHAPES), ("a {}",), "world_shape"), tokenizer.vocab_size)
    with pytest.raises(ConfigError) as error:
        evaluate(shapes, [evaluator])
    message = str(error.value)
    assert "\n" not in message and "head/color" in message
    assert "world_shape" in message and SHAPES[0] in message and list(COLORS)[0] in message  # both class lists named
    reordered = ClassTask(tuple(reversed(COLORS)), COLOR_TEMPLATES, "reversed")
    with pytest.raises(ConfigError, match="in their order"):
        evaluate(TinyHeadObjective(reordered, tokenizer.vocab_size), [evaluator])
    with pytest.raises(ConfigError, match="no classifier of its own"):
        evaluate(TinyHeadObjective(None, tokenizer.vocab_size), [evaluator])


@pytest.mark.parametrize(
    "task, key",
    [
        ("{type: head, dataset: {format: imagefolder, path: x}, rendering: sketch}", "eval.tasks.0"),
        ("{type: head, dataset: {format: imagefolder, path: x}, world_task: color}", "eval.tasks.0"),
        ("{type: head, world_task: size}", "eval.tasks.0.world_task"),
        ("{type: head, role: train}", "eval.tasks.0.role"),
    ],
)
def test_bad_head_configs_name_the_key(task, key):
    with pytest.raises(ConfigError) as error:
        build_config({}, [*TINY, f"eval.tasks=[{task}]"])
    assert key in str(error.value) and "\n" not in str(error.value)
