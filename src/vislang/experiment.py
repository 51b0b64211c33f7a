"""The run config: one validated object that *is* the experiment.

:class:`RunConfig` composes the config sections (``model``, ``data``, ``tokenizer``, ``train``)
with the chosen objective's own section (``objective``, declared in the objective's file and
picked by ``objective.kind``) and the evaluation tasks (``eval.tasks``, each picked by its
``type``). Unknown keys are refused, a field the chosen objective does not have is refused, and
:func:`load_config` turns the first problem into one line naming the key. A YAML file may start
from another with ``base: other.yaml``.

The defaults are the demo: a tiny CLIP that learns the built-in world on a laptop CPU.
"""

from __future__ import annotations

import copy
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, SerializeAsAny, ValidationError, field_validator, model_validator

from vislang.classes import ClassTask
from vislang.config import PRESETS, ModelConfig, Section, TokenizerConfig, TrainConfig
from vislang.config.base import (
    deep_merge,
    format_error,
    parse_override,
    pick_registered,
    read_config_file,
    set_dotted,
)
from vislang.data import build_source
from vislang.data.benchmark import DATASET_FORMATS, DatasetConfig
from vislang.data.labelled import TrainingDataConfig
from vislang.errors import ConfigError
from vislang.eval import TASKS, EvalContext, TaskConfig, TaskEntry
from vislang.eval.compositional import CompositionalTask
from vislang.eval.retrieval import RetrievalTask
from vislang.eval.tasks import distinct_prefixes
from vislang.eval.zeroshot import ZeroShotTask
from vislang.objectives import OBJECTIVES, Objective, ObjectiveConfig
from vislang.objectives.contrastive import ClipConfig

# Keys of the layout before objectives owned their sections, and where each went.
MOVED = {
    "loss": "the loss fields moved into the objective's section (objective: {kind: clip, label_smoothing: 0.1})",
    "loss.label_smoothing": "objective.label_smoothing",
    "loss.hard_negative_images": "objective.hard_negative_images",
    "loss.parallel_prob": "objective.parallel_prob (objective kind cappa)",
    "loss.contrastive_weight": "objective.contrastive_weight (objective kind coca)",
    "loss.caption_weight": "objective.caption_weight (objective kind coca)",
    "loss.siglip_ring": "objective.ring (objective kind siglip)",
    "loss.siglip_chunk": "objective.chunk (objective kind siglip)",
    "model.decoder": "objective.decoder (objective kinds cap, cappa, coca)",
    "eval.zeroshot": "eval.tasks: [{type: zeroshot}, ...] (a task runs when listed)",
    "eval.retrieval": "eval.tasks: [{type: retrieval}, ...] (a task runs when listed)",
    "eval.compositional": "eval.tasks: [{type: compositional}, ...] (a task runs when listed)",
    "eval.n_classify": "eval.tasks: [{type: zeroshot, n: ...}]",
    "eval.n_retrieval": "eval.tasks: [{type: retrieval, n: ...}]",
    "eval.n_probe": "eval.tasks: [{type: compositional, n: ...}]",
    "eval.aro": "eval.tasks: [{type: aro, kind: ..., annotations: ..., images: ...}]",
    "eval.retrieval_sources": "eval.tasks: [{type: retrieval, source: {kind: shards, path: ...}}]",
}


def world_tasks() -> list[TaskConfig]:
    """The built-in world's tasks: what a run evaluates by default when it trains on the world."""
    return [ZeroShotTask(), RetrievalTask(), CompositionalTask()]


class EvalConfig(Section):
    """The ``eval`` section: what a run evaluates, when, and what its report warns about."""

    batch_size: int = Field(500, ge=1, description="images or texts encoded at a time")
    tasks: list[TaskEntry] = Field(
        default_factory=list,
        description="evaluation tasks by type (see vislang.eval.TASKS): [{type: zeroshot, every: 250}, "
        "{type: retrieval, source: {...}}, {type: aro, ...}]; unset: the world's zeroshot, retrieval and "
        "compositional tasks when a training source is the world, else none",
    )

    at_start: bool | None = Field(
        None,
        description="evaluate every task before the first step (logged at step 0), the 'before' of report.md's "
        "fine-tuning cost; unset: true when train.init_from is set (a fine-tune), else false",
    )
    max_zeroshot_drop: float = Field(
        0.02,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="report.md and log.txt warn when a task of role unseen (with no roles: any zero-shot top-1) "
        "lost more than this (absolute) between step 0 and the end",
    )

    @model_validator(mode="after")
    def _distinct(self) -> EvalConfig:
        distinct_prefixes(self.tasks)
        return self

    def evaluates_at_start(self, train: TrainConfig) -> bool:
        """Whether the loop evaluates before its first step: a fine-tune is judged by what it
        changed, so by default it measures where it started (``train.init_from``)."""
        return self.at_start if self.at_start is not None else train.init_from is not None


class RunConfig(Section):
    objective: SerializeAsAny[ObjectiveConfig] = Field(
        ClipConfig(),
        description="what is learned: objective.kind (clip, siglip, cap, cappa, coca) and that objective's own "
        "loss and decoder fields; a bare name (objective: siglip) takes its defaults",
    )
    model: ModelConfig = Field(ModelConfig(), description="the towers, shared embedding and logit scale")
    data: TrainingDataConfig = Field(TrainingDataConfig(), description="training data and image preprocessing")
    tokenizer: TokenizerConfig = Field(TokenizerConfig(), description="the text tokenizer")
    train: TrainConfig = Field(TrainConfig(), description="optimisation, schedule, scale, checkpoints")
    eval: EvalConfig = Field(EvalConfig(), description="evaluation tasks, in training and from vislang eval")

    @field_validator("objective", mode="before")
    @classmethod
    def _objective(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = {"kind": value}
        if isinstance(value, dict) and "kind" not in value:  # fields without a kind: the default objective's
            value = {"kind": "clip", **value}
        return pick_registered(OBJECTIVES, "kind", "objective kind", value)

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        objective, data = self.objective, self.data
        if data.cit is not None and (not objective.accepts_cit or data.hard_negatives):
            accepting = ", ".join(k for k, c in OBJECTIVES.items() if c.accepts_cit)
            raise ValueError(
                f"data.cit needs a contrastive objective that accepts it ({accepting}) without data.hard_negatives"
            )
        if data.hard_negatives and not objective.accepts_hard_negatives:
            accepting = ", ".join(k for k, c in OBJECTIVES.items() if c.accepts_hard_negatives)
            raise ValueError(
                f"data.hard_negatives needs an objective that accepts it ({accepting}), not {objective.kind!r}"
            )
        objective.check(self.model, self.train)
        if objective.needs_labels and not data.carries_labels():
            raise ValueError(
                f"the {objective.kind} objective trains on labelled images: data.sources: [{{kind: labelled, ...}}] "
                "(or tables with a label_column)"
            )
        if "tasks" not in self.eval.model_fields_set and any(s.kind == "world" for s in data.sources):
            # the world's evaluators describe a model of the world, not of a user's data
            self.eval.tasks = world_tasks()
            self.eval.model_fields_set.add("tasks")
        return self


# -- loading ---------------------------------------------------------------------------------


def _moved_key(raw: dict[str, Any]) -> str | None:
    """The first key of the old layout in ``raw``, dotted."""
    for key in MOVED:
        node: Any = raw
        for part in key.split("."):
            node = node.get(part, KeyError) if isinstance(node, dict) else KeyError
        if node is not KeyError:
            deeper = [f"{key}.{k}" for k in node] if isinstance(node, dict) and key == "loss" else []
            return next((k for k in deeper if k in MOVED), key)
    return None


def _expand_preset(raw: dict[str, Any], source: str) -> dict[str, Any]:
    model = raw.get("model")
    if not isinstance(model, dict) or not model.get("preset"):
        return raw
    name = model["preset"]
    if not isinstance(name, str) or name not in PRESETS:
        raise ConfigError(f"{source}: model.preset: unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return {**raw, "model": deep_merge(PRESETS[name], model)}


def _objective_field_error(error: ValidationError, raw: dict[str, Any], source: str) -> str | None:
    first = error.errors()[0]
    loc = first["loc"]
    if first["type"] != "extra_forbidden" or len(loc) < 2 or loc[0] != "objective":
        return None
    kind = raw["objective"].get("kind") if isinstance(raw.get("objective"), dict) else None
    if kind not in OBJECTIVES:
        return None
    fields = ", ".join(OBJECTIVES[kind].model_fields)
    key = ".".join(str(p) for p in loc)
    return f"{source}: {key}: the {kind} objective has no such field (its fields: {fields})"


def build_config(raw: dict[str, Any], overrides: list[str] = (), source: str = "config") -> RunConfig:
    """Validate a raw mapping plus ``key=value`` overrides into a :class:`RunConfig`."""
    raw = copy.deepcopy(raw)
    for text in overrides:
        set_dotted(raw, *parse_override(text))
    moved = _moved_key(raw)
    if moved is not None:
        where = MOVED[moved]
        raise ConfigError(f"{source}: {moved}: " + (where if "moved" in where else f"has moved to {where}"))
    raw = _expand_preset(raw, source)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_objective_field_error(error, raw, source) or format_error(error, source)) from None


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML file (with its ``base:`` chain) or start from the defaults; apply ``--set`` overrides."""
    raw = read_config_file(path) if path is not None else {}
    return build_config(raw, overrides, str(path) if path is not None else "config")


def with_eval_overrides(cfg: RunConfig, overrides: list[str], source: str) -> RunConfig:
    """A trained run's config with ``eval.*`` overrides (``vislang eval --set``). Any other field
    describes the trained model or its training, so changing it is refused rather than ignored."""
    for text in overrides:
        key = parse_override(text)[0]
        if key != "eval" and not key.startswith("eval."):
            raise ConfigError(f"--set {key}: only eval.* fields can change when evaluating a trained model")
    return build_config(cfg.model_dump(mode="json"), overrides, source)


def to_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


# -- what a run builds from its config ----------------------------------------------------------


def build_objective(cfg: RunConfig, vocab_size: int, pad_id: int, classes: ClassTask | None = None) -> Objective:
    """The configured objective with a freshly initialised model (``classes``: for objectives
    that need them, the training source's or the ones saved with the weights)."""
    if cfg.objective.needs_classes and classes is None:
        raise ConfigError(f"the {cfg.objective.kind} objective needs the class list of a labelled source")
    return cfg.objective.build(cfg.model, vocab_size, pad_id, classes)


def eval_context(
    cfg: RunConfig,
    tokenizer,
    batch_size: int | None = None,
    workers: int = 0,
    progress: bool = False,
    precision: str = "fp32",
) -> EvalContext:
    """What the run's evaluators need: its tokenizer, preprocessing, world and held-out sources
    (``batch_size`` default: ``eval.batch_size``)."""
    v, d, seed = cfg.model.vision, cfg.data, cfg.train.seed
    return EvalContext(
        tokenizer=tokenizer,
        image_size=v.image_size,
        mean=v.image_mean,
        std=v.image_std,
        batch_size=batch_size or cfg.eval.batch_size,
        seed=seed,
        world_config=d.world,
        open_source=lambda s: build_source(d, s, v.image_size, seed, train=False),
        resize_mode=d.resize_mode,
        interpolation=d.interpolation,
        workers=workers,
        progress=progress,
        precision=precision,
        frames=d.frames,
    )


# -- the schema, field by field -------------------------------------------------------------------


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(annotation) is list or any(_is_list(a) for a in typing.get_args(annotation))


def _sections(annotation: Any) -> list[type[Section]]:
    """The Section classes inside a field's annotation (X, X | None, list[X])."""
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return [annotation]
    return [s for arg in typing.get_args(annotation) for s in _sections(arg)]


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    if isinstance(annotation, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    return str(annotation).replace("typing.", "").replace("pydantic.functional_serializers.", "")


def schema_fields(
    cls: type[Section] = RunConfig, prefix: str = "", variant: str = ""
) -> Iterator[tuple[str, str, Any]]:
    """(dotted key, variant, pydantic FieldInfo) of every field, depth first. The objective's
    fields come once per objective kind (variant: the kind), the task fields once per task type
    (keyed ``eval.tasks[].FIELD``, variant: the type); items of other lists are keyed ``KEY[].FIELD``."""
    for name, info in cls.model_fields.items():
        key = f"{prefix}{name}"
        if cls is RunConfig and name == "objective":
            for kind, objective in OBJECTIVES.items():
                yield from schema_fields(objective, f"{key}.", kind)
            continue
        if cls is EvalConfig and name == "tasks":
            yield key, variant, info
            for kind, task in TASKS.items():
                yield from schema_fields(task, f"{key}[].", kind)
            continue
        nested, many = _sections(info.annotation), _is_list(info.annotation)
        if nested and (many or info.default is None or len(typing.get_args(info.annotation)) > 1):
            yield key, variant, info  # a list, optional or alternative section: the field itself, then its fields
        seen: set[str] = set()
        for section in nested:
            # a dataset section is one of several formats: every format's fields, each name once
            for cls in DATASET_FORMATS.values() if section is DatasetConfig else [section]:
                for field in schema_fields(cls, f"{key}[]." if many else f"{key}.", variant):
                    if field[0] not in seen:
                        seen.add(field[0])
                        yield field
        if not nested:
            yield key, variant, info


def explain(key: str | None = None) -> str:
    """Field, type, default and description of ``key`` (a dotted field, or a section: everything
    under it), or of every field."""
    rows = []
    for name, variant, info in schema_fields():
        if key is not None and name != key and not name.startswith(f"{key}.") and not name.startswith(f"{key}[]"):
            continue
        if info.is_required():
            default = "(required)"
        else:
            default = info.get_default(call_default_factory=True)
            dump = lambda v: v.model_dump(mode="json") if isinstance(v, Section) else v  # noqa: E731
            default = repr([dump(v) for v in default] if isinstance(default, list) else dump(default))
        owned = f" [{variant}]" if variant else ""
        rows.append(
            f"{name}{owned}: {_type_name(info.annotation)} = {default}\n    {info.description or '(no description)'}"
        )
    if not rows:
        raise ConfigError(f"unknown config key {key!r} (vislang config --explain lists every field)")
    return "\n".join(rows)
