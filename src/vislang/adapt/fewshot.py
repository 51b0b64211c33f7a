"""``vislang fewshot``: training-free and few-shot classifiers on a suite's classification tasks.

Every zero-shot task of a suite gives the test sets; the few-shot images come from the same
data's train split, which is carved once (seeded) into three disjoint parts:

- the shot candidates, from which :func:`vislang.eval.probes.sample_shots` draws k per class,
  seeds 0..S-1 (for one seed a smaller draw is part of a larger one);
- a labelled validation split (``n_val`` images) on which every method chooses its
  hyperparameters (probe l2, Tip-Adapter's α and β, TIP-X's α, β, γ, Tip-Adapter-F's epoch);
  the test set is never looked at;
- an unlabelled pool (``n_pool`` images, labels never read) from which SuS-X retrieves its
  support set; ``support_dir`` gives images labelled by their class subfolder instead (SuS-SD's
  generated images: the row ``sus_x_support``, :mod:`vislang.adapt.fewshot_support`).

For the built-in world the train split is ``classification_sets(world, n, split="train")`` in
the world's own rendering (or ``pool_rendering`` for the pool), so a shift task (sketch,
textured, palette) is a classifier fitted on the training rendering and tested under shift,
and ``*_unseen`` tests the colour-shape pairs that the train split never shows. A dataset task
uses the ``train`` split of its dataset section; a task without one is skipped with a note.

Each test set's features, every part of the train split and every prompt are encoded once
(one :class:`~vislang.eval.encode.FeatureCache`), and each method is fitted once per (train
split, shot count, seed) and scored on every test set that shares the train split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vislang.adapt import fewshot_math as fm
from vislang.adapt.fewshot_probe import cross_modal_set, search_probe
from vislang.adapt.fewshot_support import SupportSet, pool_files, support_sets
from vislang.config.data import Rendering
from vislang.data.benchmark import ArrayImages, Classification, FileImages, ImageSet
from vislang.data.world_tasks import classification_sets
from vislang.errors import ConfigError, DataError, VislangError
from vislang.eval.encode import FeatureCache
from vislang.eval.probes import sample_shots
from vislang.eval.tasks import EvalContext, TaskConfig
from vislang.eval.zeroshot import ZeroShotTask
from vislang.objectives import Objective
from vislang.objectives.contrastive import EmbeddingObjective

METHODS = ("zeroshot", "linear_probe", "tip_adapter", "tip_adapter_f", "cross_modal", "sus_x", "sus_x_support")
SHOT_FREE = ("zeroshot", "sus_x", "sus_x_support")  # use no labelled shots: one result per test set, shots = 0
DEFAULT_METHODS = METHODS[:-1]  # sus_x_support needs a support_dir


@dataclass(frozen=True)
class FewshotOptions:
    """What to run and how the train split is carved (see the module docstring)."""

    shots: tuple[int, ...] = (1, 2, 4, 8, 16)
    methods: tuple[str, ...] = DEFAULT_METHODS
    seeds: int = 3
    n_train: int = 1000  # the world: shot candidates rendered (a dataset: the rest of its train split)
    n_val: int = 500
    n_pool: int = 2000
    support_per_class: int = 16  # SuS-X: M retrieved images per class
    pool_rendering: Rendering | None = None  # the world: the pool's rendering (default: its own)
    pool_dir: str | None = None  # SuS-X: a folder of images to retrieve from instead (labels unused)
    support_dir: str | None = None  # sus_x_support: a folder of one subfolder of images per class
    epochs: int = fm.TIP_F_EPOCHS
    probe_max_iter: int = 1000  # L-BFGS iterations per probe fit (CLIP's 1000)
    split_seed: int = 0

    def check(self) -> None:
        """Bad options fail as one line naming the flag, before anything is rendered or encoded."""
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"--methods: unknown {unknown[0]!r} (known: {', '.join(METHODS)})")
        if not self.methods:
            raise ConfigError("--methods: name at least one method")
        bad = [k for k in self.shots if k < 1]
        if bad or not self.shots:
            raise ConfigError(f"--shots: every shot count must be >= 1, got {list(self.shots)}")
        for name in ("seeds", "n_train", "n_val", "n_pool", "support_per_class", "epochs", "probe_max_iter"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(self, name)}")
        for flag, folder in (("--pool", self.pool_dir), ("--support", self.support_dir)):
            if folder and not Path(folder).is_dir():
                raise DataError(f"{flag}: not a folder: {folder}")
        if ("sus_x_support" in self.methods) != bool(self.support_dir):
            raise ConfigError("--support DIR and the method sus_x_support go together: give both or neither")


@dataclass
class Source:
    """One train split, carved: labelled shot candidates and validation, an unlabelled pool."""

    name: str
    candidates: Classification
    val: Classification
    pool: ImageSet
    support: SupportSet | None = None  # sus_x_support's images, labelled by their folder


@dataclass
class Target:
    """One test set (a zero-shot result's name, e.g. ``zeroshot_sketch/shape``) and its train split."""

    name: str
    source: str
    test: Classification


@dataclass
class Row:
    """One method at one shot count on one test set: the accuracy of every seed (one for the
    shot-free methods) and the hyperparameters each fit chose."""

    task: str
    source: str
    method: str
    shots: int
    accs: list[float]
    params: list[dict[str, Any]] = field(default_factory=list)

    @property
    def mean(self) -> float:
        """Mean accuracy over seeds."""
        return float(np.mean(self.accs))

    @property
    def std(self) -> float:
        """Population std over seeds, as big_vision's few-shot evaluator reports it."""
        return float(np.std(self.accs))


@dataclass
class FewshotResult:
    """Every row; notes on what was left out; per test set its chance level (1 / classes);
    per train split its sizes (shot candidates, validation, pool)."""

    rows: list[Row]
    notes: list[str]
    options: FewshotOptions
    chance: dict[str, float] = field(default_factory=dict)
    splits: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    support: dict[str, dict[str, Any]] = field(default_factory=dict)  # per train split: sus_x_support's set
    warnings: list[str] = field(default_factory=list)


def carve(n: int, n_val: int, n_pool: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices 0..n-1 permuted by ``seed`` and cut into (candidates, validation, pool) of
    ``n - n_val - n_pool``, ``n_val`` and ``n_pool`` indices, each part sorted."""
    if n_val < 1 or n_pool < 1 or n_val + n_pool >= n:
        raise ConfigError(f"cannot carve {n} images into {n_val} validation, {n_pool} pool and some shot candidates")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val + n_pool :]), np.sort(order[:n_val]), np.sort(order[n_val : n_val + n_pool])


def _take_images(images: ImageSet, idx: np.ndarray, tag: str) -> ImageSet:
    """Images at ``idx``; rendered arrays stay arrays (encoded without loader workers)."""
    if isinstance(images, ArrayImages):
        return ArrayImages(images.images[idx], tag)
    return images.subset(idx.tolist())


def _take(data: Classification, idx: np.ndarray, tag: str) -> Classification:
    labels = np.asarray(data.labels)[idx]
    images = _take_images(data.images, idx, tag)
    return Classification(images, labels, data.classnames, data.templates, data.name, data.descriptions, data.prompts)


def _source(name: str, train: Classification, pool: ImageSet | None, options: FewshotOptions, exact: bool) -> Source:
    """``train`` carved; the pool is ``pool`` at the pool's indices (the same scenes in another
    rendering), else ``train``'s own images there. A dataset's split (not ``exact``) gives at
    most a quarter of its images to validation and a quarter to the pool, keeping half as candidates."""
    n = len(train.labels)
    n_val, n_pool = (
        (options.n_val, options.n_pool) if exact else (min(options.n_val, n // 4), min(options.n_pool, n // 4))
    )
    if n_val < 1 or n_pool < 1:
        raise ConfigError(f"{name}: a train split of {n} images is too small to carve validation and pool images from")
    cand, val, rest = carve(n, n_val, n_pool, options.split_seed)
    pool_images = _take_images(train.images if pool is None else pool, rest, f"{name}/pool")
    return Source(name, _take(train, cand, f"{name}/shots"), _take(train, val, f"{name}/val"), pool_images)


def _world_sources(context: EvalContext, keys: set[str], options: FewshotOptions) -> dict[str, Source]:
    """The world's train split in its own rendering (the pool in ``pool_rendering``)."""
    world, own = context.world(), context.world_config.rendering
    total = options.n_train + options.n_val + options.n_pool
    sets = classification_sets(world, total, split="train", rendering=own)
    pool_rendering = options.pool_rendering or own
    pool = sets if pool_rendering == own else classification_sets(world, total, "train", pool_rendering)
    out = {}
    for key in sorted(keys):
        task = key.split("/", 1)[1]
        d = sets[task]
        train = Classification(ArrayImages(d.images, "fewshot/world/train"), d.labels, d.classnames,
                               list(d.templates), task)  # fmt: skip
        pool_images = ArrayImages(pool[task].images, f"fewshot/world/{pool_rendering}")
        out[key] = _source(key, train, pool_images, options, exact=True)
    return out


def plan(
    tasks: list[TaskConfig], context: EvalContext, options: FewshotOptions, warnings: list[str] | None = None
) -> tuple[dict[str, Source], list[Target], list[str]]:
    """The train splits and test sets of a suite's zero-shot tasks (nothing encoded yet), and a
    note for every task left out (``warnings`` gets the support folder's unmatched subfolders)."""
    targets, notes, datasets, world_keys = [], [], {}, set()
    for task in tasks:
        if not isinstance(task, ZeroShotTask):
            notes.append(f"{task.metric_prefix()}: a {task.type} task, not a classification task: skipped")
            continue
        prefix = task.metric_prefix()
        for evaluator in task.build(context):
            if task.dataset == "world":
                within = evaluator.name[len(prefix) + 1 :]
                key = f"world/{within.removesuffix('_unseen')}"
                world_keys.add(key)
            else:
                key = f"dataset/{prefix}"
                if key not in datasets and task.dataset.split == "train":
                    notes.append(f"{prefix}: its test split is the train split, so shots would be test images: skipped")
                    datasets[key] = None
                elif key not in datasets:
                    try:
                        datasets[key] = task.dataset.read_classification("train")
                    except VislangError as error:
                        notes.append(f"{prefix}: no train split to draw shots from ({error}): skipped")
                        datasets[key] = None
                if datasets[key] is None:
                    continue
                _same_classes(datasets[key], evaluator.data, prefix)
            targets.append(Target(evaluator.name, key, evaluator.data))
    sources = _world_sources(context, world_keys, options) if world_keys else {}
    sources |= {
        key: _source(key, data, None, options, exact=False) for key, data in datasets.items() if data is not None
    }
    if options.pool_dir:  # SuS-X's support from a pool the user names (a crawl, generated images)
        pool = FileImages(pool_files(options.pool_dir))
        sources = {key: replace(source, pool=pool) for key, source in sources.items()}
        notes.append(f"SuS-X retrieves its support from the {len(pool)} images under {options.pool_dir}")
    if options.support_dir:  # SuS-SD: images per class, labelled by their folder
        names = {key: list(source.candidates.classnames) for key, source in sources.items()}
        given, more, warned = support_sets(options.support_dir, names, options.support_per_class, options.split_seed)
        sources = {key: replace(source, support=given[key]) for key, source in sources.items()}
        notes += more
        (warnings if warnings is not None else notes).extend(warned)
    return sources, targets, notes


def _same_classes(train: Classification, test: Classification, name: str) -> None:
    if list(train.classnames) != list(test.classnames):
        raise ConfigError(f"{name}: the train and test splits name different classes; give the dataset classnames")


@dataclass
class Encoded:
    """A train split's normalised features: prompts, prototypes, the drawn shots (the union of
    every draw; the other candidates are never encoded), validation and pool."""

    prompts: list[torch.Tensor]
    prototypes: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    val: tuple[torch.Tensor, torch.Tensor]
    pool: torch.Tensor
    support: tuple[torch.Tensor, torch.Tensor] | None = None  # given support: features, folder labels


class Encoder:
    """Normalised features through one cache: every image set and prompt list encoded once."""

    def __init__(self, objective: Objective, context: EvalContext) -> None:
        if not isinstance(objective, EmbeddingObjective):
            raise ConfigError(
                f"fewshot needs a two-tower model with image and text embeddings; {type(objective).__name__} "
                "scores classes by likelihood"
            )
        self.objective, self.context = objective, context
        self.cache, self.pipeline = FeatureCache(), context.pipeline()

    def images(self, images: ImageSet, what: str) -> torch.Tensor:
        """Unit-length features on the CPU: every method compares by cosine."""
        return fm.normalize(self.cache.images(self.objective, images, self.pipeline, what=what).cpu())

    def prompts(self, data: Classification) -> list[torch.Tensor]:
        """Each class's normalised prompt embeddings: the prototypes and the cross-modal probe's text shots."""
        prompts = data.class_prompts()
        texts = [text for group in prompts for text in group]
        c = self.context
        flat = self.cache.texts(self.objective, texts, c.tokenizer, c.batch_size, c.precision).cpu()
        return [fm.normalize(part) for part in torch.split(flat, [len(group) for group in prompts])]

    def source(self, source: Source, drawn: np.ndarray) -> Encoded:
        """Prompts, the candidates at ``drawn``, validation, pool and the given support (if any)."""
        prompts = self.prompts(source.candidates)
        shots = _take(source.candidates, drawn, f"{source.name}/drawn")
        x = self.images(shots.images, f"{source.name} shots") if len(drawn) else torch.zeros(0, 1)
        val = (self.images(source.val.images, f"{source.name} val"), _labels(source.val))
        pool = self.images(source.pool, f"{source.name} pool")
        s = source.support
        support = (self.images(s.images, f"{source.name} support"), torch.from_numpy(s.labels)) if s else None
        return Encoded(prompts, fm.class_prototypes(prompts), x, _labels(shots), val, pool, support)


def _labels(data: Classification) -> torch.Tensor:
    return torch.as_tensor(np.asarray(data.labels), dtype=torch.long)


Classifier = Callable[[torch.Tensor], torch.Tensor]


def fit(
    method: str, e: Encoded, idx: torch.Tensor | None, options: FewshotOptions, seed: int
) -> tuple[Classifier, dict[str, Any]]:
    """(classifier, chosen hyperparameters) of one method on the shots ``idx`` (None: shot-free)."""
    w, n_classes = e.prototypes, e.prototypes.shape[0]
    if method == "zeroshot":
        return (lambda f: fm.zeroshot_logits(f, w)), {}
    if method in ("sus_x", "sus_x_support"):  # retrieved from the pool, or given with its labels
        if method == "sus_x":
            chosen, labels = fm.retrieve_support(e.pool, w, options.support_per_class)
            support = e.pool[chosen]
        else:
            support, labels = e.support
        values = fm.one_hot(labels, n_classes)
        c = fm.search_tipx(*e.val, w, support, values)
        return (lambda f: fm.tipx_logits(f, w, support, values, c)), asdict(c)
    x, y = e.x[idx], e.y[idx]
    if method in ("linear_probe", "cross_modal"):
        train = (x, y) if method == "linear_probe" else cross_modal_set(x, y, e.prompts)
        probe = search_probe(train, e.val, n_classes, options.probe_max_iter)
        return probe.logits, {"l2": probe.l2}
    values = fm.one_hot(y, n_classes)
    c = fm.search_tip(*e.val, w, x, values)
    if method == "tip_adapter":
        return (lambda f: fm.tip_logits(f, w, x, values, c.alpha, c.beta)), asdict(c)
    trained = fm.train_tip_f(x, y, w, c, e.val, options.epochs, seed=seed)
    c2 = fm.search_tip(*e.val, w, trained.keys, values)
    params = asdict(c2) | {"epoch": trained.epoch, "train_alpha": c.alpha, "train_beta": c.beta}
    return (lambda f: fm.tip_logits(f, w, trained.keys, values, c2.alpha, c2.beta)), params


def _draws(e_labels: torch.Tensor, shots: list[int], seeds: int, n_classes: int) -> dict[tuple[int, int], torch.Tensor]:
    return {(k, s): sample_shots(e_labels, k, s, n_classes) for k in shots for s in range(seeds)}


def run_fewshot(
    objective: Objective, tasks: list[TaskConfig], context: EvalContext, options: FewshotOptions
) -> FewshotResult:
    """Every method, shot count and seed on every test set of the suite's zero-shot tasks."""
    options.check()
    warnings: list[str] = []
    sources, targets, notes = plan(tasks, context, options, warnings)
    if not targets:
        raise ConfigError("the suite has no zero-shot classification task with a train split: nothing to do")
    encoder, result = Encoder(objective, context), FewshotResult([], notes, options, warnings=warnings)
    for key, source in sources.items():
        mine = [t for t in targets if t.source == key]
        n_classes = len(source.candidates.classnames)
        labels = _labels(source.candidates)
        smallest = int(torch.bincount(labels, minlength=n_classes).min())
        shots = [k for k in options.shots if k <= smallest]
        if len(shots) < len(options.shots):
            notes.append(f"{key}: the smallest class has {smallest} shot candidates; "
                         f"shots {[k for k in options.shots if k > smallest]} left out")  # fmt: skip
        draws = (
            _draws(labels, shots, options.seeds, n_classes) if any(m not in SHOT_FREE for m in options.methods) else {}
        )
        drawn = np.unique(torch.cat(list(draws.values())).numpy()) if draws else np.zeros(0, dtype=int)
        if "sus_x" in options.methods and len(source.pool) < options.support_per_class:
            raise ConfigError(f"{key}: the pool has {len(source.pool)} images, fewer than --support-per-class "
                              f"{options.support_per_class}")  # fmt: skip
        encoded = encoder.source(source, drawn)
        # a draw's indices into the candidates, as positions among the encoded (drawn) ones
        draws = {k: torch.from_numpy(np.searchsorted(drawn, v.numpy())) for k, v in draws.items()}
        tests = [(t, encoder.images(t.test.images, t.name), _labels(t.test)) for t in mine]
        result.rows += _score_all(encoded, tests, draws, shots, options, context.progress, key)
        result.chance |= {t.name: 1.0 / n_classes for t in mine}
        result.splits[key] = (len(labels), len(source.val.labels), len(source.pool))
        result.support |= {key: source.support.summary()} if source.support else {}
    order = {t.name: i for i, t in enumerate(targets)}
    result.rows.sort(key=lambda r: (order[r.task], options.methods.index(r.method), r.shots))
    return result


def _score_all(encoded, tests, draws, shots, options: FewshotOptions, progress: bool, key: str) -> list[Row]:
    rows: dict[tuple[str, str, int], Row] = {}
    jobs = [(m, 0, 0) for m in options.methods if m in SHOT_FREE]
    jobs += [(m, k, s) for k in shots for s in range(options.seeds) for m in options.methods if m not in SHOT_FREE]
    for method, k, seed in tqdm(jobs, desc=f"fewshot {key}", unit="fit", disable=not progress, leave=False):
        classifier, params = fit(method, encoded, draws.get((k, seed)), options, seed)
        for target, x, y in tests:
            row = rows.setdefault((target.name, method, k), Row(target.name, key, method, k, []))
            row.accs.append(fm.accuracy(classifier(x), y))
            row.params.append(params)
    return list(rows.values())
