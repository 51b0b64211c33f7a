"""Video evaluation: clip-caption retrieval, same-subject similarity and the temporal (order)
probe, on the motion world (:mod:`vislang.data.world_motion`) or, for the first two, on a table of
the user's own videos.

- ``video_retrieval``: R@k both ways between test clips and their captions (each caption once),
  by the image retrieval evaluator: ``video_retrieval/text_to_image/R@1``, ...
- ``same_subject``: clips of the same subject, in the spirit of EchoCLIP's same-patient task:
  every pair of clips is scored by the cosine similarity of their embeddings and the pairs of one
  subject should outscore the others, reported as AUROC (``same_subject/auroc``; 0.5 is chance).
  In the motion world a subject is one object (shape, colour, size) with other directions and
  paths; in a table it is the value of ``group_column`` (a patient id).
- ``temporal``: a clip and the same clip reversed, against the clip's caption (which names the
  direction of motion); credit 1 when the caption prefers the clip, 0.5 on a tie, so a model
  that averages its frames scores exactly 0.5 (``temporal/acc``).

Motion-world clips have the length of ``data.world.motion_frames`` of the run evaluated. A table
(``table:``, CSV/TSV/parquet, read as :mod:`vislang.data.benchmark.manifest` reads manifests) has a
video column holding a video file or frame folder (relative to the table's folder) or encoded
video bytes; every clip is decoded once, when the task is built, by :mod:`vislang.data.video`
(``frames`` frames, uniform sampling) and resized as the model's evaluation preprocessing resizes.
A video that does not decode (corrupt, truncated, no frames, missing file) is skipped and counted
by reason in the evaluator's ``details()``, with a warning: a clinical test set always has a few
broken studies, and one of them should not stop an evaluation that takes hours to reach.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt, model_validator

from vislang.data.benchmark import ArrayImages, Retrieval
from vislang.data.benchmark.base import MAX_PIXELS
from vislang.data.benchmark.manifest import read_table
from vislang.data.decode import BadSample
from vislang.data.samples import resolve_image
from vislang.data.transforms import ImageTransform
from vislang.data.video import read_clip
from vislang.data.world_motion import SUBJECTS, MotionWorld, motion_retrieval_set, subject_set, temporal_set
from vislang.errors import ConfigError
from vislang.eval.encode import FeatureCache, ImagePipeline, text_features
from vislang.eval.retrieval import RetrievalEvaluator
from vislang.eval.tasks import EvalContext, Evaluator, TaskConfig
from vislang.eval.video_metrics import auroc, order_credit, pair_labels
from vislang.eval.zeroshot import TIES_DESCRIPTION, Ties
from vislang.objectives import Objective

WORLD_RETRIEVAL_N = 300  # the motion world's default clip count for video_retrieval
DEFAULT_FRAMES = 8  # a table's clip length when the run trained on still images (data.frames <= 1)
SKIP_EXAMPLES = 5  # skipped rows named in details(), so a person can open the first few


def motion_world(context: EvalContext) -> MotionWorld:
    return MotionWorld(context.world(), context.world_config.motion_frames)


def clip_features(
    objective: Objective, features: FeatureCache, clips: np.ndarray, name: str, context_args
) -> torch.Tensor:
    """Features of uint8 clips [N, T, S, S, 3] (already at the model's size), through the cache."""
    mean, std, batch_size = context_args
    pipeline = ImagePipeline(ImageTransform(clips.shape[2]), tuple(mean), tuple(std), batch_size)
    return features.images(objective, ArrayImages(clips, name), pipeline, name)


# -- a table of the user's videos -----------------------------------------------------------------


def changed(task: TaskConfig, names: tuple[str, ...]) -> list[str]:
    """The fields of ``names`` that differ from their defaults (a saved config lists every field,
    so "given" must mean "not the default" for it to load again)."""
    fields = type(task).model_fields
    return [name for name in names if getattr(task, name) != fields[name].default]


class VideoTableTask(TaskConfig):
    """What the video tasks that can read a table share: the table, its video column, the clip
    length and a row cap. Without ``table`` they run on the motion world."""

    path_fields: ClassVar[tuple[str, ...]] = ("table",)
    table_columns: ClassVar[tuple[str, ...]] = ()  # the task's own column fields (group, caption)

    table: str | None = Field(
        None,
        description="a CSV, TSV or parquet table of your own videos (relative paths in a suite file are relative "
        "to the suite's folder); unset: the built-in motion world",
    )
    video_column: str = Field(
        "video",
        description="table only: the column holding each clip: a video file (.mp4, .webm, ...) or a folder of "
        "frames, relative to the table's folder, or the encoded video bytes",
    )
    frames: int | None = Field(
        None,
        ge=1,
        le=256,
        description=f"table only: frames per clip, uniformly sampled (default: the run's data.frames, or "
        f"{DEFAULT_FRAMES} when that is 0 or 1)",
    )

    @model_validator(mode="after")
    def _table_fields_need_a_table(self) -> VideoTableTask:
        """A table field given without a table would be silently ignored: refuse it instead."""
        if self.table is None:
            given = changed(self, ("video_column", "frames", *self.table_columns))
            if given:
                raise ValueError(f"{self.type}: {', '.join(given)} only apply with a table (table is unset)")
        return self

    def clip_length(self, context: EvalContext) -> int:
        """``frames``, else the run's ``data.frames`` (when it is a clip length), else
        the default: the clip length the model trained on is the one it embeds best."""
        if self.frames is not None:
            return self.frames
        run_frames = context.frames
        return run_frames if run_frames > 1 else DEFAULT_FRAMES

    def read_videos(self, context: EvalContext, columns: dict[str, str], n: int | None) -> VideoTable:
        assert self.table is not None
        return read_video_table(
            self.type, Path(self.table).expanduser(), self.video_column, columns, self.clip_length(context), n, context
        )


@dataclass
class VideoTable:
    """The decoded clips of a table's usable rows, those rows' values of the other columns, and
    what was skipped (reason -> count, and the first few rows with their reasons)."""

    path: Path
    clips: np.ndarray  # uint8 [N, T, S, S, 3]
    values: dict[str, list[str]]  # column field -> value of each kept row
    rows: int  # rows read (after the cap)
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_rows: list[str] = field(default_factory=list)

    def skip(self, where: str, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.skipped_rows) < SKIP_EXAMPLES:
            self.skipped_rows.append(f"{where}: {reason}")

    def details(self) -> dict[str, Any]:
        return {
            "table": str(self.path),
            "rows": self.rows,
            "clips": len(self.clips),
            "skipped": dict(sorted(self.skipped.items())),
            "skipped_rows": list(self.skipped_rows),
        }

    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def reasons(self) -> str:
        return ", ".join(f"{reason} {count}" for reason, count in sorted(self.skipped.items())) or "none"


def _text(value: Any) -> str | None:
    """A cell as text (a parquet integer patient id too); None for an empty one."""
    if value is None or isinstance(value, bytes | dict | list) or (isinstance(value, float) and math.isnan(value)):
        return None  # a NaN group id is an empty cell, not one group
    text = " ".join(str(value).split())
    return text or None


def read_video_table(
    task: str, path: Path, video_column: str, columns: dict[str, str], frames: int, n: int | None,
    context: EvalContext,
) -> VideoTable:  # fmt: skip
    """Every usable row of the table at ``path`` (the first ``n``): its clip decoded at the model's
    size and its values of ``columns`` (field name -> column); bad rows are skipped and counted.
    A missing table or column, or fewer than two usable clips, is a one-line :class:`ConfigError`."""
    if not path.is_file():
        raise ConfigError(f"{task}.table: table not found: {path}")
    table = read_table(path).head(n)
    for key, column in {"video_column": video_column, **columns}.items():
        if column not in table.columns:
            raise ConfigError(f"{path}: no column {column!r} ({task}.{key}); its columns: {', '.join(table.columns)}")
    transform = context.pipeline().transform  # the model's evaluation resize, as every image task's
    rng = np.random.default_rng(0)  # uniform sampling draws nothing; read_clip takes a generator
    out = VideoTable(path, np.zeros((0,), np.uint8), {key: [] for key in columns}, len(table.rows))
    clips = []
    for i in range(len(table.rows)):
        where = table.where(i)
        values = {key: _text(table.columns[column][i]) for key, column in columns.items()}
        empty = next((key for key, value in values.items() if value is None), None)
        if empty is not None:
            out.skip(where, f"no_{empty.removesuffix('_column')}")
            continue
        try:
            source = resolve_image(table.columns[video_column][i], path.parent)
        except BadSample:
            out.skip(where, "no_video")
            continue
        try:
            picked = read_clip(source, frames, "uniform", MAX_PIXELS, rng)
        except BadSample as bad:
            out.skip(where, bad.reason)
            continue
        clips.append(np.stack([transform(frame) for frame in picked]))
        for key, value in values.items():
            out.values[key].append(value)
    if len(clips) < 2:
        raise ConfigError(
            f"{path}: {len(clips)} usable clip(s) of {out.rows} rows, {task} needs at least 2 "
            f"(skipped: {out.reasons()})"
        )
    out.clips = np.stack(clips)
    if out.skipped:
        warnings.warn(
            f"{task}: {path}: skipped {out.skipped_total()} of {out.rows} videos ({out.reasons()})", stacklevel=4
        )
    return out


# -- the tasks ------------------------------------------------------------------------------------


class VideoRetrievalTask(VideoTableTask):
    """Clip-caption retrieval (``video_retrieval/...``): on the motion world's test split, or on a
    table whose rows are one clip and one caption each (an echocardiogram and its report)."""

    table_columns: ClassVar[tuple[str, ...]] = ("caption_column",)

    type: Literal["video_retrieval"] = Field("video_retrieval", description="the task type")
    caption_column: str = Field("caption", description="table only: the column holding each clip's caption")
    n: int | None = Field(
        None,
        ge=1,
        description=f"clips scored, each with its own caption (the motion world: default {WORLD_RETRIEVAL_N}, at "
        f"most {4 * SUBJECTS}; a table: the first n rows, default all)",
    )
    ks: list[PositiveInt] = Field([1, 5, 10], min_length=1, description="the k of each Recall@k")
    ties: Ties = Field("clip_benchmark", description=TIES_DESCRIPTION)

    @model_validator(mode="after")
    def _world_size(self) -> VideoRetrievalTask:
        """The motion world has one caption per subject and direction; more clips would repeat captions."""
        if self.table is None and self.n is not None and self.n > 4 * SUBJECTS:
            raise ValueError(f"n {self.n}: the motion world has at most {4 * SUBJECTS} distinct captions")
        return self

    def build(self, context: EvalContext) -> list[Evaluator]:
        ks = tuple(sorted(set(self.ks)))
        if self.table is None:
            raw = motion_retrieval_set(motion_world(context), self.n or WORLD_RETRIEVAL_N)
            data = Retrieval(ArrayImages(raw.images, self.type), [[t] for t in raw.texts], self.type)
            return [RetrievalEvaluator(self.type, data, context, self.ties, ks)]
        videos = self.read_videos(context, {"caption_column": self.caption_column}, self.n)
        captions = [[text] for text in videos.values["caption_column"]]
        data = Retrieval(ArrayImages(videos.clips, self.type), captions, videos.path.name)
        return [TableRetrievalEvaluator(self.type, data, context, self.ties, ks, videos)]


class TableRetrievalEvaluator(RetrievalEvaluator):
    """Retrieval on a video table: the retrieval evaluator, whose details also say what the
    table read skipped."""

    def __init__(self, name: str, data: Retrieval, context: EvalContext, ties: str, ks, videos: VideoTable) -> None:
        super().__init__(name, data, context, ties, ks)
        self.videos = videos

    def __call__(self, objective: Objective, features) -> dict[str, float]:
        return super().__call__(objective, features) | {f"{self.name}/skipped": float(self.videos.skipped_total())}

    def details(self) -> dict[str, Any]:
        return super().details() | self.videos.details()


class SameSubjectTask(VideoTableTask):
    """Same-subject AUROC of clip pairs by embedding cosine similarity (``same_subject/auroc``):
    motion-world objects, or a table's groups (clips of one patient should embed alike)."""

    table_columns: ClassVar[tuple[str, ...]] = ("group_column", "n")

    type: Literal["same_subject"] = Field("same_subject", description="the task type")
    subjects: int = Field(24, ge=2, le=SUBJECTS, description="motion world: distinct subjects (objects) drawn")
    per_subject: int = Field(4, ge=2, description="motion world: clips of each subject (own direction and path)")
    group_column: str = Field(
        "group", description="table only: the column naming each clip's subject (e.g. patient_id)"
    )
    n: int | None = Field(None, ge=1, description="table only: the first n rows (default all)")

    @model_validator(mode="after")
    def _world_fields_need_the_world(self) -> SameSubjectTask:
        """A table's subjects are its groups: subjects and per_subject would be silently ignored."""
        given = changed(self, ("subjects", "per_subject"))
        if self.table is not None and given:
            raise ValueError(f"same_subject: {', '.join(given)} are for the motion world; a table's subjects are "
                             f"its {self.group_column!r} column")  # fmt: skip
        return self

    def build(self, context: EvalContext) -> list[Evaluator]:
        if self.table is None:
            clips, groups = subject_set(motion_world(context), self.subjects, self.per_subject)
            return [SameSubjectEvaluator(self.type, clips, groups, context)]
        videos = self.read_videos(context, {"group_column": self.group_column}, self.n)
        groups = np.asarray(videos.values["group_column"])
        distinct = len(set(groups.tolist()))  # the evaluator forms the pairs; here only whether both kinds exist
        if distinct == 1 or distinct == len(groups):
            kind = "every clip is in one group" if distinct == 1 else "no two clips share a group"
            raise ConfigError(f"{videos.path}: {kind} of column {self.group_column!r} (same_subject.group_column)")
        return [SameSubjectEvaluator(self.type, videos.clips, groups, context, videos)]


class SameSubjectEvaluator:
    def __init__(
        self, name: str, clips: np.ndarray, groups: np.ndarray, context: EvalContext, videos: VideoTable | None = None
    ) -> None:
        self.name, self.clips, self.videos = name, clips, videos
        self.first, self.second, self.same = pair_labels(groups)
        self.args = (context.mean, context.std, context.batch_size)

    @torch.no_grad()
    def __call__(self, objective: Objective, features: FeatureCache) -> dict[str, float]:
        embedded = F.normalize(clip_features(objective, features, self.clips, self.name, self.args).float(), dim=-1)
        cosine = (embedded[self.first] * embedded[self.second]).sum(-1).cpu().numpy()
        out = {f"{self.name}/auroc": auroc(cosine, self.same)}
        if self.videos is not None:  # as ARO's: the count in the logs and results, the reasons in details()
            out[f"{self.name}/skipped"] = float(self.videos.skipped_total())
        return out

    def details(self) -> dict[str, object]:
        out: dict[str, object] = {"kind": "auroc", "pairs": len(self.same), "positives": int(self.same.sum())}
        return out if self.videos is None else out | self.videos.details()


class TemporalProbeTask(TaskConfig):
    """Does a clip's caption prefer the clip to the clip reversed? (``temporal/acc``)"""

    type: Literal["temporal"] = Field("temporal", description="the task type")
    n: int = Field(300, ge=1, description="clips probed")

    def build(self, context: EvalContext) -> list[Evaluator]:
        clips, captions = temporal_set(motion_world(context), self.n)
        return [TemporalProbeEvaluator(self.type, clips, captions, context)]


class TemporalProbeEvaluator:
    def __init__(self, name: str, clips: np.ndarray, captions: list[str], context: EvalContext) -> None:
        self.name, self.clips, self.reversed = name, clips, np.ascontiguousarray(clips[:, ::-1])
        self.tokens = context.tokenizer(captions)
        self.args = (context.mean, context.std, context.batch_size)

    @torch.no_grad()
    def __call__(self, objective: Objective, features: FeatureCache) -> dict[str, float]:
        forward = clip_features(objective, features, self.clips, self.name, self.args)
        backward = clip_features(objective, features, self.reversed, f"{self.name}_reversed", self.args)
        texts = text_features(objective, self.tokens, self.args[2])[:, None].to(forward.device)
        credit = order_credit(
            objective.pair_scores(forward, texts)[:, 0].cpu().numpy(),
            objective.pair_scores(backward, texts)[:, 0].cpu().numpy(),
        )
        return {f"{self.name}/acc": float(credit.mean())}

    def details(self) -> dict[str, str]:
        return {"kind": "candidates", "ties": "half credit"}
