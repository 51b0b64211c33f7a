"""The fine-tuning objectives on labelled images, each against a formula written here or a peer
function: clip_loss with ``classes`` (same-class pairs other than the pair itself leave both
softmaxes, hard-negative columns stay) against explicit loops; exact accumulation of FLYP; the
classifier head's starts (the zero-shot classifier, a logistic probe, zeros) and what
``train_towers`` trains; and tiny end-to-end fine-tunes from ``train.init_from``: the export
carries the class list and classifies as the trained objective does, resume is exact, and a
start of another width is refused naming a tensor."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY, export_untrained
from vislang.checkpoint import load_checkpoint
from vislang.data import build_batches, build_sources, build_world
from vislang.data.benchmark import ArrayImages, Classification
from vislang.data.transforms import to_tensor
from vislang.data.world import SHAPES
from vislang.data.world_tasks import SHAPE_TEMPLATES
from vislang.errors import ConfigError
from vislang.eval import evaluate
from vislang.eval.probes import fit_logistic
from vislang.eval.zeroshot import ZeroShotEvaluator
from vislang.experiment import build_config, build_objective, eval_context
from vislang.export import export_model, export_objective
from vislang.losses import clip_loss
from vislang.restore import load_objective
from vislang.tokenizers import BPETokenizer
from vislang.train import loop
from vislang.train.accumulate import backward
from vislang.train.setup import start_context

LABELLED = {"data": {"sources": [{"kind": "labelled", "dataset": "world", "world_task": "shape"}]}}
QUICK = ["eval.tasks=[]", "train.log_every=1"]
TEXTS = [t.format(s) for s in SHAPES for t in SHAPE_TEMPLATES] * 5


# -- clip_loss with classes -----------------------------------------------------------------------


def _masked_clip_by_hand(image, text, scale, labels, negatives=None) -> torch.Tensor:
    """Per image i: -log exp(s_ii) / Σ_{j: label_j != label_i or j = i} exp(s_ij) (+ every negative
    text); per text the same over images (no negatives); the mean of both directions."""
    n, labels = len(image), [int(y) for y in labels]
    negatives = [] if negatives is None else list(negatives)
    image_terms, text_terms = [], []
    for i in range(n):
        kept = [j for j in range(n) if labels[j] != labels[i] or j == i]
        row = [scale * image[i] @ text[j] for j in kept] + [scale * image[i] @ t for t in negatives]
        image_terms.append(torch.logsumexp(torch.stack(row), 0) - scale * image[i] @ text[i])
        column = [scale * text[i] @ image[j] for j in kept]
        text_terms.append(torch.logsumexp(torch.stack(column), 0) - scale * text[i] @ image[i])
    return (torch.stack(image_terms).mean() + torch.stack(text_terms).mean()) / 2


def _features(n: int, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    return image.requires_grad_(), text.requires_grad_()


def test_clip_loss_with_classes_is_the_masked_formula_with_its_gradients():
    image, text = _features(9)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3, 2, 0])
    loss = clip_loss(image, text, 7.5, classes=labels)
    expected = _masked_clip_by_hand(image, text, 7.5, labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    plain = clip_loss(image, text, 7.5)
    assert abs(plain.item() - loss.item()) > 1e-3  # the mask does change the loss
    grads = torch.autograd.grad(loss, (image, text))
    by_hand = torch.autograd.grad(expected, (image, text))
    for got, want in zip(grads, by_hand):
        assert torch.allclose(got, want, atol=1e-12)


def test_clip_loss_with_distinct_classes_is_plain_clip_loss_exactly():
    image, text = _features(6, seed=1)
    distinct = torch.tensor([5, 0, 3, 1, 4, 2])
    assert torch.equal(clip_loss(image, text, 3.0, classes=distinct), clip_loss(image, text, 3.0))
    negatives = F.normalize(torch.randn(4, 8, dtype=torch.float64), dim=-1)
    with_classes = clip_loss(image, text, 3.0, text_negatives=negatives, classes=distinct)
    assert torch.equal(with_classes, clip_loss(image, text, 3.0, text_negatives=negatives))


def test_clip_loss_with_classes_keeps_every_hard_negative_column():
    image, text = _features(7, seed=2)
    negatives = F.normalize(torch.randn(3, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3)), dim=-1)
    labels = torch.tensor([1, 1, 0, 1, 0, 2, 2])
    loss = clip_loss(image, text, 5.0, text_negatives=negatives, classes=labels)
    expected = _masked_clip_by_hand(image, text, 5.0, labels, negatives)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    assert abs(loss.item() - _masked_clip_by_hand(image, text, 5.0, labels).item()) > 1e-3  # they count


def test_clip_loss_refuses_label_smoothing_with_classes():
    image, text = _features(4)
    with pytest.raises(ValueError, match="label_smoothing"):
        clip_loss(image, text, 2.0, label_smoothing=0.1, classes=torch.tensor([0, 0, 1, 1]))


# -- objectives on labelled batches -----------------------------------------------------------------


def _setup(*overrides: str):
    """(config, sources, tokenizer) of a tiny run on the world's shapes."""
    cfg = build_config(LABELLED, TINY + QUICK + list(overrides))
    sources = build_sources(cfg.data, cfg.model.vision.image_size, cfg.train.seed)
    tokenizer = BPETokenizer.train(TEXTS, 300, cfg.model.text.context_length)
    return cfg, sources, tokenizer


def _objective(cfg, sources, tokenizer, seed: int = 0):
    torch.manual_seed(seed)
    return build_objective(cfg, tokenizer.vocab_size, tokenizer.pad_id, sources["labelled"].classes)


def _batch(cfg, sources, tokenizer, index: int = 0, size: int = 16) -> dict:
    batches = build_batches(cfg.data, cfg.model.vision, size, cfg.train.seed, tokenizer, sources)
    batch = batches[index]
    batch.pop("counts")
    return batch


def _gradients(objective, batch, accum_steps: int) -> dict[str, torch.Tensor]:
    objective.zero_grad(set_to_none=True)
    backward(objective, batch, accum_steps, contextlib.nullcontext)
    return {n: p.grad.clone() for n, p in objective.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind, accum_steps", [("flyp", 2), ("flyp", 3), ("classifier", 2)])
def test_accumulated_gradients_of_the_fine_tuning_objectives_are_the_whole_batch_gradients(kind, accum_steps):
    cfg, sources, tokenizer = _setup(f"objective={kind}", "model.vision.stem=patch")  # no BatchNorm in the tower
    objective = _objective(cfg, sources, tokenizer)
    objective.train()
    batch = _batch(cfg, sources, tokenizer)
    assert len(set(batch["label"].tolist())) < len(batch["label"])  # same-class pairs in the batch
    whole = _gradients(objective, batch, 1)
    split = _gradients(objective, batch, accum_steps)
    assert set(whole) == set(split) and any("vision" in n for n in whole)
    for name, grad in whole.items():
        assert torch.allclose(split[name], grad, atol=1e-5, rtol=1e-4), name
    if kind == "flyp":  # its loss is clip_loss with the labels as classes, not plain CLIP's
        with torch.no_grad():
            image, text = objective.model(batch["image"], batch["text"])
            loss = objective.loss(batch)["loss"]
            scale = objective.model.scale()
        assert loss.item() == pytest.approx(clip_loss(image, text, scale, classes=batch["label"]).item(), rel=1e-6)
        assert abs(loss.item() - clip_loss(image, text, scale).item()) > 1e-4


def _world_images(cfg, n: int, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """n one-object scenes of a split drawn by hand, with their shape labels."""
    world = build_world(cfg.data.world, cfg.model.vision.image_size)
    images, labels = [], []
    for p in range(n):
        rng = world.rng(split, p)
        scene = world.sample_scene(rng, split, 1)
        images.append(world.render(scene, rng))
        labels.append(SHAPES.index(scene.objects[0].shape))
    return np.stack(images), np.asarray(labels)


def test_the_zeroshot_head_is_the_prompt_prototypes_times_the_scale_and_predicts_as_zero_shot():
    cfg, sources, tokenizer = _setup("objective={kind: classifier, head_init: zeroshot}")
    objective = _objective(cfg, sources, tokenizer)
    objective.start(start_context(cfg, tokenizer, sources, torch.device("cpu")))
    objective.eval()
    images, labels = _world_images(cfg, 40)
    v = cfg.model.vision
    with torch.no_grad():
        features = objective.image_features(to_tensor(images, v.image_mean, v.image_std))
        prototypes = []
        for shape in SHAPES:
            prompts = F.normalize(objective.model.encode_text(tokenizer([t.format(shape) for t in SHAPE_TEMPLATES])))
            prototypes.append(F.normalize(prompts.mean(0), dim=0))
        expected = objective.model.scale() * features @ torch.stack(prototypes).T
        logits = objective.classify(features)
    assert torch.allclose(logits, expected, atol=1e-5)
    assert torch.equal(objective.head.bias, torch.zeros(len(SHAPES)))
    evaluator = ZeroShotEvaluator(
        "zeroshot/shape",
        Classification(ArrayImages(images, "hand"), labels, list(SHAPES), list(SHAPE_TEMPLATES), "shape"),
        eval_context(cfg, tokenizer),
    )
    evaluate(objective, [evaluator])
    assert torch.equal(evaluator.predictions, logits.argmax(1))


def test_the_probe_head_is_fit_logistic_on_the_start_features_of_the_training_images():
    cfg, sources, tokenizer = _setup("objective={kind: classifier, head_init: probe, probe_samples: 48, probe_l2: 0.5}")
    objective = _objective(cfg, sources, tokenizer)
    notes = objective.start(start_context(cfg, tokenizer, sources, torch.device("cpu")))
    assert "48 training images" in notes[0]
    images, labels = _world_images(cfg, 48, split="train")  # the source's first 48 samples
    v = cfg.model.vision
    objective.eval()
    with torch.no_grad():
        features = objective.image_features(to_tensor(images, v.image_mean, v.image_std))
    weight, bias = fit_logistic(features, torch.as_tensor(labels), len(SHAPES), 0.5)
    assert torch.allclose(objective.head.weight, weight.float(), atol=1e-5)
    assert torch.allclose(objective.head.bias, bias.float(), atol=1e-5)
    assert weight.abs().max() > 1e-3


def _start_export(tmp_path, *overrides: str) -> str:
    """An untrained CLIP with the tiny model section (plus ``overrides``) as an export."""
    torch.manual_seed(11)
    clip = build_config({}, TINY + QUICK + list(overrides))
    return export_untrained(clip, TEXTS, tmp_path / "start")


def _record_run(monkeypatch) -> tuple[list[dict[str, torch.Tensor]], list]:
    """The objective's whole state (parameters and buffers) before the first step and after each
    step of a run, and the run itself."""
    seen, runs = [], []
    real = loop.optimizer_step

    def recording(run, batch, step):
        if not seen:
            runs.append(run)
            seen.append({n: v.detach().clone() for n, v in run.parts.objective.state_dict().items()})
        out = real(run, batch, step)
        seen.append({n: v.detach().clone() for n, v in run.parts.objective.state_dict().items()})
        return out

    monkeypatch.setattr(loop, "optimizer_step", recording)
    return seen, runs


@pytest.mark.parametrize("train_towers", [False, True])
def test_train_towers_says_which_weights_a_classifier_fine_tune_moves(tmp_path, monkeypatch, train_towers):
    start = _start_export(tmp_path)
    seen, _ = _record_run(monkeypatch)
    objective = f"objective={{kind: classifier, train_towers: {str(train_towers).lower()}}}"
    cfg = build_config(LABELLED, TINY + QUICK + [objective, f"train.init_from={start}", "train.steps=4"])
    loop.train(cfg, tmp_path / "run", quiet=True)
    assert len(seen) == 5
    first, last = seen[0], seen[-1]

    def moved(prefix: str) -> list[str]:
        return [n for n in first if n.startswith(prefix) and not torch.equal(first[n], last[n])]

    assert moved("head.")
    assert moved("model.text.") == [] and moved("model.logit_") == []
    if train_towers:
        assert moved("model.vision.")
    else:  # the frozen image tower's BatchNorm statistics (conv stem) included
        assert moved("model.") == [] and any("running_mean" in n for n in first)
    for before, after in zip(seen, seen[1:]):  # frozen weights hold at every step, not only at the end
        for name in before:
            if name.startswith("model.text.") or name.startswith("model.logit_"):
                assert torch.equal(before[name], after[name]), name


@pytest.mark.parametrize("head_init", ["zeroshot", "zeros"])
def test_the_head_init_replaces_a_head_loaded_by_init_from(tmp_path, monkeypatch, head_init):
    cfg, sources, tokenizer = _setup(f"objective={{kind: classifier, head_init: {head_init}}}")
    trained = _objective(cfg, sources, tokenizer)
    with torch.no_grad():
        trained.head.weight.normal_()
        trained.head.bias.uniform_(1, 2)
    start = export_objective(trained, tokenizer, cfg, tmp_path / "start")
    fine_tune = build_config(LABELLED, TINY + QUICK + [f"objective={{kind: classifier, head_init: {head_init}}}",
                                                       f"train.init_from={start}", "train.steps=1"])  # fmt: skip
    seen, _ = _record_run(monkeypatch)
    loop.train(fine_tune, tmp_path / "run", quiet=True)
    assert torch.equal(seen[0]["head.bias"], torch.zeros(len(SHAPES)))
    if head_init == "zeros":
        assert torch.equal(seen[0]["head.weight"], torch.zeros_like(seen[0]["head.weight"]))


# -- end to end from train.init_from --------------------------------------------------------------


def _stop_after(monkeypatch, steps: int) -> None:
    real = loop.optimizer_step

    def stopping(run, batch, step):
        if step == steps:
            raise RuntimeError("stopped")
        return real(run, batch, step)

    monkeypatch.setattr(loop, "optimizer_step", stopping)


@pytest.mark.parametrize("kind", ["flyp", "classifier"])
def test_a_fine_tune_from_init_from_exports_loads_and_resumes_exactly(tmp_path, monkeypatch, kind):
    start = _start_export(tmp_path)
    cfg = build_config(LABELLED, TINY + QUICK + [f"objective={kind}", f"train.init_from={start}", "train.steps=6",
                                                 "train.checkpoint_every=3", "train.keep_checkpoints=3"])  # fmt: skip
    seen, runs = _record_run(monkeypatch)
    loop.train(cfg, tmp_path / "straight", quiet=True)
    trained = runs[0].parts.objective.eval()
    assert (tmp_path / "straight" / "tokenizer.json").read_text() == (tmp_path / "start" / "tokenizer.json").read_text()
    exported = tmp_path / "export"
    export_model(tmp_path / "straight", exported)
    loaded, _, loaded_cfg = load_objective(exported)
    assert loaded_cfg.objective.kind == kind
    images, _ = _world_images(cfg, 12)
    x = to_tensor(images, cfg.model.vision.image_mean, cfg.model.vision.image_std)
    with torch.no_grad():
        features, loaded_features = trained.image_features(x), loaded.image_features(x)
        assert torch.equal(features, loaded_features)
        if kind == "classifier":
            classes = build_sources(cfg.data, cfg.model.vision.image_size, 0)["labelled"].classes
            assert json.loads((exported / "classes.json").read_text()) == classes.to_json()
            assert loaded.classes == classes
            assert torch.equal(loaded.classify(loaded_features), trained.classify(features))
        else:  # a FLYP model is a CLIP: no head over classes
            assert loaded.classify(loaded_features) is None and not (exported / "classes.json").exists()
    initial = {k: v for k, v in seen[0].items() if k.startswith("model.")}
    assert any(not torch.equal(v, seen[-1][k]) for k, v in initial.items())  # it did train

    _stop_after(monkeypatch, 3)
    with pytest.raises(RuntimeError, match="stopped"):
        loop.train(cfg, tmp_path / "stopped", quiet=True)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "stopped")["step"] == 3
    loop.train(cfg, tmp_path / "stopped", resume=True, quiet=True)
    resumed, straight = load_checkpoint(tmp_path / "stopped"), load_checkpoint(tmp_path / "straight")
    assert resumed["step"] == straight["step"] == 6
    assert set(resumed["model"]) == set(straight["model"])
    for name, tensor in straight["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name
    assert resumed.get("classes") == straight.get("classes")
    assert (straight.get("classes") is not None) == (kind == "classifier")


@pytest.mark.parametrize("kind", ["flyp", "classifier"])
def test_init_from_a_model_of_another_architecture_is_refused_naming_the_field(tmp_path, kind):
    start = _start_export(tmp_path, "model.vision.width=48")
    cfg = build_config(LABELLED, TINY + QUICK + [f"objective={kind}", f"train.init_from={start}", "train.steps=1"])
    with pytest.raises(ConfigError, match=r"model\.vision\.width is 48 there, 32 in this config") as refused:
        loop.train(cfg, tmp_path / "run", quiet=True)
    assert "\n" not in str(refused.value)
    # equal shapes, another computation (the activation): refused too, before any weight is loaded
    other = _start_export(tmp_path / "act", "model.vision.act=quick_gelu")
    cfg = build_config(LABELLED, TINY + QUICK + [f"objective={kind}", f"train.init_from={other}", "train.steps=1"])
    with pytest.raises(ConfigError, match=r"model\.vision\.act is 'quick_gelu' there"):
        loop.train(cfg, tmp_path / "run2", quiet=True)


def test_a_classifier_with_lora_trains_its_head_and_the_adapters_only(tmp_path):
    from vislang.train.distributed import Ranks
    from vislang.train.setup import build_trainable

    start = _start_export(tmp_path)
    overrides = ["objective=classifier", f"train.init_from={start}", "train.lora={rank: 4}"]
    cfg = build_config(LABELLED, TINY + QUICK + overrides)
    sources = build_sources(cfg.data, cfg.model.vision.image_size, cfg.train.seed)
    (tmp_path / "run").mkdir()
    parts = build_trainable(cfg, tmp_path / "run", sources, None, Ranks(), torch.device("cpu"))
    trainable = {n for n, p in parts.objective.named_parameters() if p.requires_grad}
    assert {"head.weight", "head.bias"} <= trainable
    assert all(n.startswith("head.") or ".lora_" in n for n in trainable), sorted(trainable)
    assert any(".lora_" in n and n.startswith("model.vision.") for n in trainable)


def test_a_classifier_starts_from_a_classifier_of_another_task(tmp_path):
    start = _start_export(tmp_path)
    shape = build_config(LABELLED, TINY + QUICK + ["objective=classifier", f"train.init_from={start}", "train.steps=2"])
    loop.train(shape, tmp_path / "shape", quiet=True)
    colour_data = {"data": {"sources": [{"kind": "labelled", "dataset": "world", "world_task": "color"}]}}
    overrides = TINY + QUICK + ["objective=classifier", f"train.init_from={tmp_path / 'shape'}", "train.steps=2"]
    loop.train(build_config(colour_data, overrides), tmp_path / "colour", quiet=True)  # 6-class head not loaded
    assert load_checkpoint(tmp_path / "colour")["model"]["head.weight"].shape[0] == 8


def test_resume_refuses_a_dataset_whose_classes_changed(tmp_path):
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / "data" / "train" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20, 20), (40 * i, 200 if name == "a" else 10, 90)).save(
                tmp_path / "data" / "train" / name / f"{i}.png"
            )
    raw = {
        "data": {
            "sources": [{"kind": "labelled", "dataset": {"format": "imagefolder", "path": str(tmp_path / "data")}}]
        }
    }
    start = _start_export(tmp_path)
    overrides = TINY + QUICK + ["objective=classifier", f"train.init_from={start}", "train.batch_size=4"]
    loop.train(
        build_config(raw, [*overrides, "train.steps=2", "train.checkpoint_every=2"]), tmp_path / "run", quiet=True
    )
    (tmp_path / "data" / "train" / "c").mkdir()
    Image.new("RGB", (20, 20)).save(tmp_path / "data" / "train" / "c" / "0.png")
    with pytest.raises(ConfigError, match="classes"):
        loop.train(
            build_config(raw, [*overrides, "train.steps=2", "train.checkpoint_every=2"]),
            tmp_path / "run",
            resume=True,
            quiet=True,
        )
