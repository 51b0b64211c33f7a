"""LaBo (Yang et al. 2023, "Language in a Bottle: Language Model Guided Concept Bottlenecks for
Interpretable Image Classification", CVPR): a classifier whose only inputs are an image's
similarities to short visual concepts a language model wrote, so every weight reads as "class
y relies on concept c".

1. :func:`generate_concepts` asks the backend LaBo's kind of questions about each class
   (``concepts`` requests, ``n`` answers each), splits the answers into one concept a line and
   cleans them (:func:`clean_concepts`).
2. :func:`vislang.adapt.labo_select.select_concepts` keeps ``k`` per class (submodular, the
   score of LaBo's released code).
3. The bottleneck: the image embedding's cosine similarities to the chosen concepts' text
   embeddings, standardised with the training shots' mean and std per concept, then a linear
   layer ``W`` [C, K] initialised as LaBo does (``init``, LaBo's ``init_val = 1``, from each
   class to its own concepts, 0 elsewhere) and trained with cross-entropy by AdamW on the
   cached features (:func:`fit_bottleneck`). LaBo's optional sparsity penalty is an L1 term on
   ``W`` (``l1``, default off); an L2 pull towards the initial association (``prior``, not
   LaBo's) keeps each class leaning on its own concepts when a few shots would let
   cross-entropy lean on any correlated one. There is no bias, so a class's score is its
   weighted concepts alone. Unlike LaBo's code (``models/asso_opt/asso_opt.py``), which uses
   ``softmax(W)`` over each class's row (``asso_act = 'softmax'``) on raw dot products with
   logits scaled by 100 and Adam, ``W`` is used as it is on the standardised scores (kept from
   before; vislang's form has not been measured against LaBo's).

:mod:`vislang.adapt.gist` shares this module's encoding helpers (:class:`TaskData`,
:func:`encode_task`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vislang.adapt.labo_select import select_concepts
from vislang.api import load_objective
from vislang.data.benchmark import ArrayImages, ImageFolderConfig
from vislang.data.transforms import ImageTransform
from vislang.data.world import COLORS, SHAPES
from vislang.data.world_tasks import COLOR_TEMPLATES, SHAPE_TEMPLATES, classification_sets
from vislang.errors import ConfigError, DataError, first_line
from vislang.eval.encode import FeatureCache
from vislang.eval.probes import sample_shots
from vislang.eval.zeroshot import first_images
from vislang.experiment import eval_context
from vislang.llm.base import Backend, LLMError, Request, article
from vislang.llm.cupl import read_classes
from vislang.objectives.contrastive import EmbeddingObjective

# LaBo's questions to GPT-3 (its prompts ask for features, surroundings and distinguishing traits).
LABO_QUESTIONS: tuple[str, ...] = (
    "List the most important features for recognizing something as {article} {c}:",
    "List the things most commonly seen around {article} {c}:",
    "What are the useful visual features for distinguishing {article} {c} in a photo? List them:",
)
WORLD_TASKS = {"shape": (SHAPES, SHAPE_TEMPLATES), "color": (tuple(COLORS), COLOR_TEMPLATES)}
_MARKER = re.compile(r"^\s*(?:[-*\u2022]+|\d+[.)]|\(\d+\))\s*")
MAX_CONCEPT_WORDS = 8  # LaBo drops long concepts: a bottleneck unit should be one short visual trait


def read_class_spec(spec: str) -> list[str]:
    """Class names: ``world:shape`` / ``world:color`` (the built-in world's), ``imagefolder:PATH``
    (the class folders of PATH's train split), else a file or a shipped set as ``vislang
    describe`` reads them."""
    if spec.startswith("world:"):
        return list(world_task(spec)[0])
    if spec.startswith(FOLDER):
        return list(folder_dataset(spec, "train").read_classification().classnames)
    return read_classes(spec)


FOLDER = "imagefolder:"


def folder_dataset(spec: str, split: str) -> ImageFolderConfig:
    """The ImageFolder a task spec ``imagefolder:PATH`` names (``PATH/<split>/<class>/...``), with
    OpenAI's ImageNet templates for its zero-shot prompts."""
    return ImageFolderConfig(format="imagefolder", path=spec.removeprefix(FOLDER), split=split)


def task_classes(spec: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(class names, templates) of a task spec: ``world:shape|color`` or ``imagefolder:PATH``."""
    if spec.startswith(FOLDER):
        data = folder_dataset(spec, "train").read_classification()
        return tuple(data.classnames), tuple(data.templates)
    return world_task(spec)


def world_task(spec: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(class names, templates) of ``world:shape`` or ``world:color``."""
    key = spec.removeprefix("world:")
    if not spec.startswith("world:") or key not in WORLD_TASKS:
        raise ConfigError(f"--task {spec!r}: expected world:shape, world:color or imagefolder:PATH")
    return WORLD_TASKS[key]


def concept_requests(classname: str) -> list[Request]:
    """LaBo's questions about one class, as ``concepts`` requests."""
    return [Request("concepts", q.format(article=article(classname), c=classname)) for q in LABO_QUESTIONS]


def clean_concepts(texts: Sequence[str], classname: str) -> list[str]:
    """Answers split into one concept a line: list markers, quotes and end punctuation stripped,
    lower case, whitespace joined; empty, over-long and repeated concepts dropped, and (as LaBo)
    those naming the class itself, which would let the bottleneck read the class name back."""
    out, seen = [], set()
    own = re.compile(r"(?<!\w)" + re.escape(classname.lower()) + r"(?:e?s)?(?!\w)")
    for text in texts:
        for line in text.splitlines():
            concept = " ".join(_MARKER.sub("", line).split()).strip("\"'\u201c\u201d .,;:!").lower()
            if not concept or concept in seen or len(concept.split()) > MAX_CONCEPT_WORDS or own.search(concept):
                continue
            seen.add(concept)
            out.append(concept)
    return out


def generate_concepts(backend: Backend, classnames: Sequence[str], n: int, temperature: float) -> dict[str, list[str]]:
    """``{class: [concepts]}``, ``n`` answers to each of LaBo's questions per class. A class left
    with no concept is an error naming it: the bottleneck would have nothing to read for it."""
    out: dict[str, list[str]] = {}
    for name in classnames:
        answers = backend.generate(concept_requests(name), n, temperature)
        concepts = clean_concepts([text for texts in answers for text in texts], name)
        if not concepts:
            raise LLMError(f"the {backend.name} backend gave no usable concept for class {name!r}")
        out[name] = concepts
    return out


def read_text_lists(path: str | Path, what: str) -> dict[str, list[str]]:
    """A ``{class: [texts]}`` JSON file (concepts or descriptions), checked key by key."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {what} file {path}: {first_line(error)}") from None
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path}: expected a non-empty JSON object {{class name: [{what}]}}")
    for key, value in data.items():
        if not isinstance(value, list) or not value or not all(isinstance(t, str) and t.strip() for t in value):
            raise DataError(f"{path}: {key!r} must be a non-empty list of non-empty strings")
    return data


def classes_covered(data: dict[str, list[str]], classnames: Sequence[str], path: str | Path) -> None:
    """Refuse a file that lacks some class of the task (named) before anything is encoded."""
    missing = [name for name in classnames if name not in data]
    if missing:
        raise DataError(f"{path}: no entry for class {missing[0]!r} of the task")


# -- the bottleneck, as pure functions -------------------------------------------------------------


def association_init(owners: Sequence[Sequence[int]], n_classes: int, value: float = 1.0) -> torch.Tensor:
    """LaBo's initial class-concept weights [C, K]: ``value`` where concept ``j`` belongs to class
    ``c`` (``c in owners[j]``; a concept several classes proposed belongs to each), 0 elsewhere."""
    weight = torch.zeros(n_classes, len(owners))
    for j, classes in enumerate(owners):
        weight[list(classes), j] = value
    return weight


def standardise(scores: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Concept scores on the training shots' scale: raw cosines differ little between concepts."""
    return (scores - mean) / std.clamp(min=1e-6)


def fit_bottleneck(
    x: torch.Tensor, y: torch.Tensor, init: torch.Tensor, steps: int = 300, lr: float = 0.01,
    weight_decay: float = 0.0, l1: float = 0.0, prior: float = 0.0, seed: int = 0,
) -> torch.Tensor:  # fmt: skip
    """``W`` [C, K] minimising ``CE(x Wᵀ, y) + l1·|W|₁ + prior·|W - init|²`` from ``init``, full
    batch, AdamW. ``prior`` keeps the weights near LaBo's class-concept association: with a few
    shots, cross-entropy alone is free to lean on any correlated concept of another class."""
    torch.manual_seed(seed)
    weight = init.clone().requires_grad_(True)
    optimizer = torch.optim.AdamW([weight], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weight.T, y) + l1 * weight.abs().sum()
        loss = loss + prior * (weight - init).square().sum()
        loss.backward()
        optimizer.step()
    return weight.detach()


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == labels).float().mean())


# -- encoding a model's features -------------------------------------------------------------------


@dataclass
class TaskData:
    """A world classification task's labelled images (uint8) for one split."""

    images: np.ndarray
    labels: np.ndarray
    classnames: list[str]
    templates: tuple[str, ...]


class Model:
    """A two-tower model with its preprocessing and one feature cache: every image set and
    text list is encoded once."""

    def __init__(self, path: str | Path, device: str = "cpu", batch_size: int = 256) -> None:
        self.objective, self.tokenizer, self.cfg = load_objective(path, device)
        if not isinstance(self.objective, EmbeddingObjective):
            raise ConfigError(f"{path}: needs a two-tower model with image and text embeddings")
        self.context = eval_context(self.cfg, self.tokenizer, batch_size)
        self.pipeline, self.cache = self.context.pipeline(), FeatureCache()

    def task(self, spec: str, n: int, split: str) -> TaskData:
        """``n`` labelled images of ``world:shape`` / ``world:color`` from ``split``, or of an
        ``imagefolder:PATH`` (spread evenly over it, decoded at the model's input size)."""
        if spec.startswith(FOLDER):
            data = first_images(folder_dataset(spec, split).read_classification(), n)
            size = self.cfg.model.vision.image_size
            resize = ImageTransform(size, self.cfg.data.resize_mode, interpolation=self.cfg.data.interpolation)
            images = np.stack([resize(data.images.read(i)) for i in range(len(data.labels))])
            return TaskData(images, np.asarray(data.labels), list(data.classnames), tuple(data.templates))
        names, templates = world_task(spec)
        key = spec.removeprefix("world:")
        data = classification_sets(self.context.world(), n, split=split)[key]
        return TaskData(data.images, np.asarray(data.labels), list(names), templates)

    def images(self, images: np.ndarray, tag: str) -> torch.Tensor:
        feats = self.cache.images(self.objective, ArrayImages(images, tag), self.pipeline, what=tag)
        return torch.nn.functional.normalize(feats.cpu().float(), dim=-1)

    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        c = self.context
        feats = self.cache.texts(self.objective, list(texts), c.tokenizer, c.batch_size, c.precision)
        return torch.nn.functional.normalize(feats.cpu().float(), dim=-1)

    def zeroshot_weights(self, data: TaskData) -> torch.Tensor:
        """Class embeddings [C, D]: the normalised mean of the class's template prompts."""
        prompts = [t.format(name, c=name) for name in data.classnames for t in data.templates]
        feats = self.texts(prompts).view(len(data.classnames), len(data.templates), -1).mean(dim=1)
        return torch.nn.functional.normalize(feats, dim=-1)


# -- the LaBo run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LaboOptions:
    shots: int = 16
    per_class: int = 5  # concepts kept per class (LaBo's k)
    n_train: int = 600  # train-split images the shots are drawn from (and discriminability is measured on)
    n_test: int = 600
    steps: int = 300
    lr: float = 0.01
    l1: float = 0.0
    prior: float = 0.01  # L2 pull towards the initial association (0: none, as in LaBo)
    init: float = 1.0
    alpha: float = 1e7  # weight of the mutual-information term (LaBo's configs: 1e7)
    beta: float = 1.0  # weight of the coverage term (LaBo's CUB config: 1)
    template: str = "{}"  # how a concept is put to the text encoder
    seed: int = 0


@dataclass
class LaboResult:
    classnames: list[str]
    concepts: list[str]  # the bottleneck's concepts, in column order
    owners: list[list[str]]  # the classes that proposed each
    weight: torch.Tensor  # [C, K]
    accuracy: float
    zeroshot: float
    selected: dict[str, list[str]]

    def top_concepts(self, name: str, n: int = 5) -> list[tuple[str, float]]:
        """The class's ``n`` largest weights, with their concepts."""
        row = self.weight[self.classnames.index(name)]
        order = torch.argsort(row, descending=True, stable=True)[:n]
        return [(self.concepts[j], float(row[j])) for j in order]


def bottleneck_columns(selected: dict[str, list[str]], classnames: Sequence[str]) -> tuple[list[str], list[list[int]]]:
    """The distinct selected concepts in class order, and the class indices that chose each."""
    concepts: list[str] = []
    owners: dict[str, list[int]] = {}
    for y, name in enumerate(classnames):
        for concept in selected[name]:
            if concept not in owners:
                concepts.append(concept)
                owners[concept] = []
            owners[concept].append(y)
    return concepts, [owners[c] for c in concepts]


def run_labo(model: Model, concepts: dict[str, list[str]], spec: str, options: LaboOptions) -> LaboResult:
    """Select, fit on ``shots`` training images per class, score on the test split (with the
    zero-shot accuracy of the same test images for comparison)."""
    train, test = model.task(spec, options.n_train, "train"), model.task(spec, options.n_test, "test")
    names = train.classnames
    x_train, x_test = model.images(train.images, "labo/train"), model.images(test.images, "labo/test")
    y_train, y_test = torch.as_tensor(train.labels).long(), torch.as_tensor(test.labels).long()
    shots = sample_shots(y_train, options.shots, options.seed, len(names))
    flat = [options.template.format(c) for name in names for c in concepts[name]]
    selected = _select(model, concepts, names, flat, x_train[shots], y_train[shots], options)
    columns, owners = bottleneck_columns(selected, names)
    bank = model.texts([options.template.format(c) for c in columns])  # [K, D]
    s_train, s_test = x_train[shots] @ bank.T, x_test @ bank.T
    mean, std = s_train.mean(dim=0), s_train.std(dim=0)
    init = association_init(owners, len(names), options.init)
    weight = fit_bottleneck(standardise(s_train, mean, std), y_train[shots], init, options.steps, options.lr,
                            l1=options.l1, prior=options.prior, seed=options.seed)  # fmt: skip
    acc = accuracy(standardise(s_test, mean, std) @ weight.T, y_test)
    zeroshot = accuracy(x_test @ model.zeroshot_weights(test).T, y_test)
    return LaboResult(names, columns, [[names[y] for y in o] for o in owners], weight, acc, zeroshot, selected)


def _select(model: Model, concepts, names, flat, images, labels, options: LaboOptions) -> dict[str, list[str]]:
    """LaBo's selection on the shots (no test image is looked at)."""
    return select_concepts(concepts, names, model.texts(flat), images, labels, options.per_class,
                           options.alpha, options.beta)  # fmt: skip


def labo_json(result: LaboResult, options: LaboOptions, model: str, task: str) -> dict:
    """What ``labo.json`` holds: the weights with their row and column names, and the scores."""
    return {
        "model": model, "task": task, "shots": options.shots, "accuracy": result.accuracy,
        "zeroshot_accuracy": result.zeroshot, "classes": result.classnames, "concepts": result.concepts,
        "concept_classes": result.owners, "weight": [[round(float(w), 6) for w in row] for row in result.weight],
        "selected": result.selected, "options": options.__dict__,
    }  # fmt: skip


def labo_markdown(result: LaboResult, options: LaboOptions, model: str, task: str, top: int = 5) -> str:
    """``labo.md``: accuracy against zero-shot, then each class's strongest concepts."""
    lines = [
        f"# LaBo concept bottleneck: {task}", "",
        f"model `{model}`, {options.shots} shots per class, {options.per_class} concepts per class "
        f"({len(result.concepts)} in the bottleneck), {options.steps} AdamW steps", "",
        "| classifier | test accuracy |", "|---|---|",
        f"| LaBo | {result.accuracy:.4f} |", f"| zero-shot (templates) | {result.zeroshot:.4f} |", "",
        "## Top concepts per class (weight)", "",
    ]  # fmt: skip
    for name in result.classnames:
        shown = ", ".join(f"{concept} ({weight:+.2f})" for concept, weight in result.top_concepts(name, top))
        lines.append(f"- **{name}**: {shown}")
    return "\n".join(lines) + "\n"


def write_labo(result: LaboResult, options: LaboOptions, out: str | Path, model: str, task: str) -> None:
    """``OUT/labo.md`` and ``OUT/labo.json``."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "labo.json").write_text(json.dumps(labo_json(result, options, model, task), indent=1) + "\n")
        (out / "labo.md").write_text(labo_markdown(result, options, model, task))
    except OSError as error:
        raise DataError(f"cannot write {out}: {first_line(error)}") from None
