"""The ``data`` section: training sources, how images enter the model, the built-in world, CiT."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from vislang.config.base import Section

NegativeRule = Literal["relation", "attribute", "noun", "shuffle", "verb"]
# How the built-in world draws a scene (vislang.data.world): the same scenes and captions in each.
Rendering = Literal["filled", "sketch", "textured", "palette"]


class WorldConfig(Section):
    seed: int = Field(0, ge=0, lt=2**63, description="seed of the procedural world (scenes, captions)")
    two_object_prob: float = Field(0.5, ge=0, le=1, allow_inf_nan=False, description="share of scenes with two objects")
    partial_caption_prob: float = Field(
        0.3, ge=0, le=1, allow_inf_nan=False, description="share of captions that omit attributes"
    )
    distinct_colors: bool = Field(False, description="two objects always differ in colour (the compositional study)")
    reading_order: bool = Field(
        False,
        description="two-object captions name the left (or upper) object first, as people tend to describe a "
        "scene; off: either wording at random",
    )
    rendering: Rendering = Field(
        "filled",
        description="how scenes are drawn (the same scenes and captions in each): filled shapes (the usual "
        "domain), sketch (outlines only), textured (striped, blotchy background) or palette (every colour "
        "hue-rotated and dimmed); the others are the distribution shifts of the world_shift suite",
    )
    motion: bool = Field(
        False,
        description="the world draws clips of motion_frames frames in which one object moves left, right, up or "
        "down, captioned with its direction (vislang.data.world_motion; the world_video suite)",
    )
    motion_frames: int = Field(8, ge=2, le=64, description="frames of one motion clip (data.frames must be 0 or this)")
    render_size: int = Field(
        0,
        ge=0,
        le=1024,
        description="0: every scene is drawn at the model's image size; N: drawn at N px and resized to it, as photos "
        "are, so a model trained or evaluated at another image size sees the same pictures resized "
        "(docs/resolution.md)",
    )

    @field_validator("render_size")
    @classmethod
    def _render_size_drawable(cls, value: int) -> int:
        if 0 < value < 16:
            raise ValueError(f"render_size must be 0 or at least 16 (the world's smallest image), got {value}")
        return value


class SourceConfig(Section):
    """One training (or held-out) source."""

    kind: Literal["world", "table", "folder", "shards", "texts"] = Field(
        "world",
        description="world (the built-in world, settings in data.world), table (.csv/.tsv/.parquet at path), "
        "folder (images with .txt/.json captions under path), shards (webdataset tars; braces and :: allowed) "
        "or texts (no images: a .txt file of one text per line, or a table's first caption_columns column; "
        "for text-only objectives such as lm)",
    )
    path: str | None = Field(None, description="the table file, image folder or shard pattern")
    name: str | None = Field(None, description="name in the per-source counts of the logs (default: kind, index)")
    weight: float = Field(
        1.0, gt=0, allow_inf_nan=False, description="with several sources: this one's share of each batch"
    )
    image_column: str = Field("image", description="tables: a path (relative to the table) or encoded bytes")
    caption_columns: list[str] = Field(["caption"], min_length=1, description="tables: the caption columns")
    label_column: str | None = Field(
        None,
        description="tables: an integer class column (GIST's pairs); batches then carry label, so objectives such "
        "as flyp leave same-class pairs out of the negatives",
    )
    caption_pick: Literal["random", "first"] = Field(
        "random", description="several captions per image: a seeded random one per visit, or always the first"
    )
    access: Literal["auto", "random", "stream"] = Field(
        "auto",
        description="shards: random access through a header index of local tars (exact resume, global shuffle) "
        "or stream through webdataset (remote URLs and pipe: always stream); auto streams when some shard is remote",
    )
    resampled: bool = Field(
        False, description="endless sampling with replacement instead of epochs (rows, or whole shards for streams)"
    )
    shuffle_buffer: int = Field(1000, ge=0, description="streams: raw samples in the seeded shuffle buffer (0: none)")
    shuffle: bool = Field(
        True,
        description="tables, folders and random-access shards: a fresh seeded permutation every epoch; false reads "
        "the stored order (data written already shuffled, such as `vislang data synth`'s)",
    )

    @model_validator(mode="after")
    def _check(self) -> SourceConfig:
        if self.kind != "world" and not self.path:
            raise ValueError(f"a {self.kind!r} source needs a path")
        if not self.shuffle and self.resampled:
            raise ValueError("shuffle: false and resampled: true contradict each other (resampled draws at random)")
        if self.label_column is not None and self.kind != "table":
            raise ValueError(f"label_column is read from tables only, not from a {self.kind!r} source")
        return self

    def label(self, index: int, alone: bool) -> str:
        """The source's name in logs and metric names."""
        return self.name or (self.kind if alone else f"{self.kind}{index}")


class CitConfig(Section):
    """CiT (Xu et al. 2023): curation in training. Each step draws ``batch_size / keep`` samples and
    trains on the ``batch_size`` whose caption embedding (under the model being trained) is
    closest to one of the target task's class names (in the templates, embeddings averaged)."""

    class_names: list[str] = Field([], description="the target task's class names")
    classes_file: str | None = Field(None, description="one class name per line, added to class_names")
    templates: list[str] = Field(["a photo of a {}."], description="prompt templates, each with {} for the class")
    keep: float = Field(
        0.5, gt=0, le=1, allow_inf_nan=False, description="the share of the drawn samples that is trained on"
    )

    @model_validator(mode="after")
    def _check(self) -> CitConfig:
        if not self.class_names and not self.classes_file:
            raise ValueError("needs class_names or classes_file")
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ValueError("templates must each contain {} (the class name)")
        return self


class DataConfig(Section):
    sources: list[SourceConfig] = Field([SourceConfig()], min_length=1, description="the training sources")
    num_workers: int = Field(1, ge=0, description="batch-building worker processes (0: in the training process)")
    resize_mode: Literal["shortest", "longest", "squash"] = Field(
        "shortest",
        description="how images enter the model (OpenCLIP's modes): shortest side + centre crop, longest side + "
        "pad, or squash",
    )
    interpolation: Literal["bicubic", "bilinear"] = Field("bicubic", description="of every resize")
    random_crop: bool = Field(
        False,
        description="training adds a random-resized crop (the world's rendered scenes too; not the motion world's clips)",
    )
    crop_scale: tuple[float, float] = Field(
        (0.9, 1.0), description="random crop: the kept area's range (low, high), 0 < low <= high <= 1"
    )
    max_image_pixels: int = Field(
        100_000_000, gt=0, description="larger images are skipped unread (decompression-bomb guard)"
    )
    hard_negatives: list[NegativeRule] = Field(
        [],
        description="NegCLIP/FiGCLIP hard-negative captions added to each batch: rules from vislang.data.negatives, "
        "one applicable rule drawn per caption (objectives that accept hard negatives only)",
    )
    frames: int = Field(
        0,
        ge=0,
        le=256,
        description="frames per sample: 0 or 1 still images ([B, 3, H, W]); T > 1 clips [B, T, 3, H, W] from "
        "videos (.mp4/.webm/... via PyAV), frame folders or shard members (a video, or numbered frames KEY.0.jpg ...)",
    )
    frame_sampling: Literal["uniform", "random"] = Field(
        "uniform",
        description="which T frames of a longer clip: uniform (the centre of each of T equal segments) or random "
        "(a seeded draw within each segment, a pure function of the sample's position); both keep time order",
    )
    world: WorldConfig = Field(WorldConfig(), description="the built-in world")
    cit: CitConfig | None = Field(None, description="curation in training (objectives that accept CiT only)")

    @model_validator(mode="after")
    def _clip_length(self) -> DataConfig:
        if not (self.world.motion and any(s.kind == "world" for s in self.sources)):
            return self
        if self.frames > 1 and self.frames != self.world.motion_frames:
            raise ValueError(
                f"data.frames {self.frames} differs from data.world.motion_frames {self.world.motion_frames}"
            )
        if self.frames <= 1 and len(self.sources) > 1:
            raise ValueError("mixing the motion world with other sources needs data.frames = data.world.motion_frames")
        return self

    @field_validator("crop_scale")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 < low <= high <= 1:  # nan fails every comparison
            raise ValueError(f"must satisfy 0 < low <= high <= 1, got {list(value)}")
        return value
