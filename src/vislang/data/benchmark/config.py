"""Evaluation datasets as config sections: one section per published format, picked by ``format``.

A suite file (or ``eval.tasks``) names a dataset by its format, its path and the split, plus the
prompt choices zero-shot classification needs: the class names and the templates (each a file,
an inline list or a shipped set name) and optional per-class descriptions. Reading returns the
plain containers of :mod:`vislang.data.benchmark.base`, so tasks never see a file format.

A string in ``classnames`` / ``templates`` is a file when it looks like a path (it has a ``/``,
starts with ``.`` or ``~``, or ends in ``.txt`` / ``.json``), otherwise a shipped set's name;
:meth:`DatasetConfig.resolve` makes relative paths absolute against the suite file's folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, ValidationError, field_validator, model_validator

from vislang.config import Section
from vislang.config.base import format_error, pick_registered
from vislang.data.benchmark.base import Classification, ImageSet, Retrieval
from vislang.data.benchmark.cifar import read_cifar
from vislang.data.benchmark.imagefolder import classnames_file, read_imagefolder
from vislang.data.benchmark.karpathy import read_karpathy
from vislang.data.benchmark.manifest import read_manifest_classification, read_manifest_retrieval
from vislang.data.benchmark.wds import read_wds_classification, read_wds_retrieval, root_file
from vislang.data.prompts import (
    check_template,
    classname_set,
    classname_sets,
    read_classnames,
    read_descriptions,
    read_templates,
    template_set,
    template_sets,
)
from vislang.errors import ConfigError, DataError

NameList = str | list[str] | None


def file_like(value: str) -> bool:
    """Whether a ``classnames`` / ``templates`` string names a file rather than a shipped set."""
    return "/" in value or "\\" in value or value.startswith((".", "~")) or value.lower().endswith((".txt", ".json"))


def _absolute(value: str, base: Path) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else Path(base) / path)


class DatasetConfig(Section):
    """What every evaluation dataset has: where it is, which split, and its prompts."""

    format: str = Field(description="the dataset's file format (see vislang.data.benchmark.DATASET_FORMATS)")
    path: str = Field(description="where the dataset is: its folder or file (relative: to the suite file's folder)")
    split: str = Field("test", min_length=1, description="the split to read (the format's own split names)")
    name: str | None = Field(
        None, description="the dataset's name in outputs (default: the path's file or folder name)"
    )
    n: int | None = Field(None, ge=1, description="read only the first n items, in file order (quick runs)")
    classnames: NameList = Field(
        None,
        description="class names in label order: a file (.txt one per line, or .json list), an inline list, "
        "or a shipped set name (vislang.data.prompts); default: the dataset's own names",
    )
    templates: NameList = Field(
        None,
        description="prompt templates with {c} for the class name: a shipped set name, a file (.txt one per "
        "line, or .json list) or an inline list; default: the dataset's own templates, else openai_imagenet",
    )
    descriptions: str | None = Field(
        None, description="a JSON file {class name: [descriptions]} (CuPL / CLIP_benchmark layout)"
    )
    prompts: Literal["templates", "descriptions", "both"] = Field(
        "templates", description="what makes each class's text embedding: templates, descriptions or both"
    )

    path_fields: ClassVar[tuple[str, ...]] = ("path", "descriptions")
    default_templates: ClassVar[str] = "openai_imagenet"
    classifies: ClassVar[bool] = False  # read_classification works (zeroshot, probe)
    captioned: ClassVar[bool] = False  # read_retrieval works (retrieval)
    classname_words: ClassVar[tuple[str, ...]] = ()  # words classnames may be besides sets and files

    @field_validator("classnames", "templates")
    @classmethod
    def _inline_list(cls, value: NameList, info: Any) -> NameList:
        if isinstance(value, str) and not file_like(value):  # a shipped set: known now, not at evaluation
            if info.field_name == "templates" and value not in template_sets():
                raise ValueError(f"unknown template set {value!r}; shipped sets: {', '.join(template_sets())}")
            if info.field_name == "classnames" and value not in (*classname_sets(), *cls.classname_words):
                raise ValueError(f"unknown class-name set {value!r}; shipped sets: {', '.join(classname_sets())}")
        if not isinstance(value, list):
            return value
        if not value or not all(isinstance(v, str) and v.strip() for v in value):
            raise ValueError("an inline list must hold at least one non-empty string")
        if info.field_name == "templates":
            for template in value:
                check_template(template, "templates", ValueError)
        elif len(set(value)) != len(value):
            raise ValueError("class names must be distinct")
        return value

    @model_validator(mode="after")
    def _descriptions_given(self) -> DatasetConfig:
        if self.prompts != "templates" and self.descriptions is None:
            raise ValueError(f"prompts: {self.prompts} needs descriptions (a JSON file {{class name: [descriptions]}})")
        return self

    def label(self) -> str:
        """The name outputs use: ``name``, else the path's file stem or folder name."""
        if self.name:
            return self.name
        path = Path(self.path.replace("{split}", self.split)).expanduser()
        if path.suffix and not path.is_dir():
            return path.stem
        return path.name or path.resolve().name

    def resolve(self, base: Path) -> DatasetConfig:
        """A copy whose relative paths (the dataset, images, prompt files) are absolute against
        ``base`` (the suite file's folder), so a suite runs the same from any working directory."""
        update = {f: _absolute(getattr(self, f), base) for f in self.path_fields if getattr(self, f) is not None}
        for field in ("classnames", "templates"):
            value = getattr(self, field)
            if isinstance(value, str) and file_like(value):
                update[field] = _absolute(value, base)
        return self.model_copy(update=update)

    def read_classification(self, split: str | None = None) -> Classification:
        """Labelled images with class names and prompts (the split defaults to ``split``)."""
        raise ConfigError(
            f"dataset {self.label()}: the {self.format} format has no class labels (read it for retrieval)"
        )

    def read_retrieval(self, split: str | None = None) -> Retrieval:
        """Images with their captions (the split defaults to ``split``)."""
        raise ConfigError(
            f"dataset {self.label()}: the {self.format} format has no captions (read it for classification)"
        )

    # -- shared by the formats ----------------------------------------------------------

    def class_list(self, own: list[str] | None) -> list[str]:
        """The class names asked for, else the dataset's own ``own``."""
        value = self.classnames
        if isinstance(value, list):
            return list(value)
        if isinstance(value, str):
            return read_classnames(Path(value).expanduser()) if file_like(value) else classname_set(value)
        if own is None:
            raise ConfigError(f"dataset {self.label()}: no class names in the dataset; give classnames")
        return own

    def template_list(self, own: list[str] | None = None) -> list[str]:
        """The templates asked for, else the dataset's own ``own``, else the format's default set."""
        value = self.templates
        if isinstance(value, list):
            return list(value)
        if isinstance(value, str):
            return read_templates(Path(value).expanduser()) if file_like(value) else template_set(value)
        return own if own is not None else template_set(self.default_templates)

    def classification(
        self, images: ImageSet, labels: np.ndarray, classnames: list[str], own_templates: list[str] | None = None
    ) -> Classification:
        """The container, with descriptions read and checked to cover every class when used."""
        descriptions = read_descriptions(Path(self.descriptions).expanduser()) if self.descriptions else None
        if descriptions is not None and self.prompts != "templates":
            missing = [c for c in classnames if c not in descriptions]
            if missing:
                raise DataError(
                    f"{self.descriptions}: no descriptions for class {missing[0]!r} "
                    f"({len(missing)} of {len(classnames)} classes have none)"
                )
        templates = self.template_list(own_templates)
        return Classification(images, labels, classnames, templates, self.label(), descriptions, self.prompts)


def _same_count(names: list[str], count: int, source: str, what: str) -> list[str]:
    if len(names) != count:
        raise DataError(f"{source}: {len(names)} class names for the {count} {what}")
    return names


def _labels_in_range(images: ImageSet, labels: np.ndarray, names: list[str], source: str) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= len(names)))
    if len(bad):
        i = int(bad[0])
        raise DataError(f"{images.name(i)}: label {labels[i]} is outside the {len(names)} class names of {source}")


class ImageFolderConfig(DatasetConfig):
    """A folder per class (torchvision's ImageFolder); ``path/<split>`` when that folder exists."""

    format: Literal["imagefolder"] = Field(description="a folder of class folders")
    classifies: ClassVar[bool] = True

    def read_classification(self, split: str | None = None) -> Classification:
        folder = read_imagefolder(Path(self.path).expanduser(), split or self.split, self.split, self.n)
        found = classnames_file(Path(self.path).expanduser(), folder.root) if self.classnames is None else None
        if found is not None:
            names, source = read_classnames(found), str(found)
        else:
            names, source = self.class_list(folder.folders), f"dataset {self.label()} classnames"
        _same_count(names, len(folder.folders), source, f"class folders of {folder.root}")
        return self.classification(folder.images, folder.labels, names)


class ManifestConfig(DatasetConfig):
    """A CSV, TSV or parquet table of images with labels or captions."""

    format: Literal["manifest"] = Field(description="a CSV / TSV / parquet table (by extension)")
    images: str | None = Field(None, description="the folder image paths are relative to (default: the manifest's)")
    image_column: str | None = Field(None, description="the image column (default: image, filepath, file_name, ...)")
    label_column: str | None = Field(None, description="the label column: class indices or names (default: label)")
    caption_columns: list[str] | None = Field(
        None, min_length=1, description="caption columns, or one column of lists (default: caption or captions)"
    )

    path_fields: ClassVar[tuple[str, ...]] = ("path", "descriptions", "images")
    classifies: ClassVar[bool] = True
    captioned: ClassVar[bool] = True

    def manifest(self, split: str | None) -> Path:
        """The table of ``split``: ``path`` with ``{split}`` filled in, or ``path`` for its own split."""
        split = split or self.split
        if "{split}" in self.path:
            return Path(self.path.replace("{split}", split)).expanduser()
        if split != self.split:
            raise ConfigError(f"{self.path}: a manifest is one split ({self.split}); write {{split}} in path for more")
        return Path(self.path).expanduser()

    def _root(self) -> Path | None:
        return Path(self.images).expanduser() if self.images else None

    def read_classification(self, split: str | None = None) -> Classification:
        wanted = self.class_list(None) if self.classnames is not None else None
        images, labels, names = read_manifest_classification(
            self.manifest(split), self._root(), self.image_column, self.label_column, wanted, self.n
        )
        return self.classification(images, labels, names)

    def read_retrieval(self, split: str | None = None) -> Retrieval:
        images, captions = read_manifest_retrieval(
            self.manifest(split), self._root(), self.image_column, self.caption_columns, self.n
        )
        return Retrieval(images, captions, self.label())


class ClipBenchmarkConfig(DatasetConfig):
    """CLIP_benchmark's webdataset export (``clip_benchmark_export_wds``), read from local shards."""

    format: Literal["clip_benchmark"] = Field(description="CLIP_benchmark's webdataset layout")
    classifies: ClassVar[bool] = True  # which one, its dataset_type.txt says
    captioned: ClassVar[bool] = True

    def read_classification(self, split: str | None = None) -> Classification:
        root = Path(self.path).expanduser()
        images, labels = read_wds_classification(root, split or self.split, self.n)
        own = root_file(root, "classnames.txt") if self.classnames is None else None
        if self.classnames is None and own is None:
            raise DataError(f"{root}: no classnames.txt (CLIP_benchmark's layout has one); give classnames")
        names = read_classnames(own) if own else self.class_list(None)
        _labels_in_range(images, labels, names, str(own) if own else f"dataset {self.label()} classnames")
        templates = root_file(root, "zeroshot_classification_templates.txt")
        return self.classification(images, labels, names, read_templates(templates) if templates else None)

    def read_retrieval(self, split: str | None = None) -> Retrieval:
        images, captions = read_wds_retrieval(Path(self.path).expanduser(), split or self.split, self.n)
        return Retrieval(images, captions, self.label())


class CifarConfig(DatasetConfig):
    """CIFAR-10 / CIFAR-100's Python pickles (the folder holding them, or torchvision's root)."""

    format: Literal["cifar"] = Field(description="CIFAR-10 / CIFAR-100 python batches")
    labels: Literal["fine", "coarse"] = Field("fine", description="CIFAR-100's 100 fine or 20 coarse classes")
    classifies: ClassVar[bool] = True
    classname_words: ClassVar[tuple[str, ...]] = ("file",)
    classnames: NameList = Field(
        None,
        description="as for every dataset, plus 'file' for the pickles' own label names; default: the shipped "
        "cifar10 / cifar100 set (CLIP_benchmark's names), the file's names for coarse labels",
    )

    def read_classification(self, split: str | None = None) -> Classification:
        data = read_cifar(Path(self.path).expanduser(), split or self.split, self.labels, self.n)
        if self.classnames == "file":
            names = data.names
        elif self.classnames is None:
            names = classname_set(data.variant) if self.labels == "fine" else data.names
        else:
            names = self.class_list(None)
        _same_count(
            names, len(data.names), f"dataset {self.label()} classnames", f"{self.labels} classes of {self.path}"
        )
        return self.classification(data.images, data.labels, names, template_set(data.variant))


class KarpathyConfig(DatasetConfig):
    """Karpathy's COCO / Flickr30k split JSON: images with their raw captions."""

    format: Literal["karpathy"] = Field(description="dataset_coco.json / dataset_flickr30k.json")
    images: str | None = Field(
        None, description="the image root (COCO: holds train2014/, val2014/); default: the JSON's folder"
    )

    path_fields: ClassVar[tuple[str, ...]] = ("path", "descriptions", "images")
    captioned: ClassVar[bool] = True

    def read_retrieval(self, split: str | None = None) -> Retrieval:
        root = Path(self.images).expanduser() if self.images else None
        images, captions = read_karpathy(Path(self.path).expanduser(), root, split or self.split, self.n)
        return Retrieval(images, captions, self.label())


DATASET_FORMATS: dict[str, type[DatasetConfig]] = {
    "imagefolder": ImageFolderConfig,
    "manifest": ManifestConfig,
    "clip_benchmark": ClipBenchmarkConfig,
    "cifar": CifarConfig,
    "karpathy": KarpathyConfig,
}


def dataset_section(value: Any, task: str, needs: str) -> Any:
    """A task field's dataset: a mapping validated as its format's section (errors raised as
    ValueError, so the config error names the task's key), able to do what the task ``needs``
    (``classifies`` or ``captioned``)."""
    value = pick_registered(DATASET_FORMATS, "format", "dataset format", value)
    if isinstance(value, DatasetConfig) and not getattr(type(value), needs):
        able = [name for name, cls in DATASET_FORMATS.items() if getattr(cls, needs)]
        what = "class labels" if needs == "classifies" else "captions"
        raise ValueError(
            f"{value.format} datasets have no {what} for {task}; formats that have them: {', '.join(able)}"
        )
    return value


def dataset_config(raw: Mapping[str, Any] | DatasetConfig, source: str = "dataset") -> DatasetConfig:
    """The section of ``raw``'s format, validated; problems are one line naming ``source``."""
    if isinstance(raw, DatasetConfig):
        return raw
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: a dataset is a mapping with format and path, got {type(raw).__name__}")
    formats = ", ".join(DATASET_FORMATS)
    kind = raw.get("format")
    if not isinstance(kind, (str, type(None))):
        raise ConfigError(f"{source}: format: a format name is a string (one of {formats}), got {kind!r}")
    if kind is None:
        raise ConfigError(f"{source}: format: missing (one of {formats})")
    if kind not in DATASET_FORMATS:
        raise ConfigError(f"{source}: format: unknown dataset format {kind!r} (formats: {formats})")
    try:
        return DATASET_FORMATS[kind].model_validate(dict(raw))
    except ValidationError as error:
        raise ConfigError(format_error(error, source)) from None
