"""Evaluation datasets read from local files: the containers evaluators consume, and one config
section per published format (``DATASET_FORMATS``) that reads them. Nothing here downloads."""

from vislang.data.benchmark.base import (
    ArrayImages,
    BytesImages,
    Classification,
    Counts,
    FileImages,
    ImageSet,
    Retrieval,
    decode_or_fail,
)
from vislang.data.benchmark.cifar import PixelImages
from vislang.data.benchmark.config import (
    DATASET_FORMATS,
    CifarConfig,
    ClipBenchmarkConfig,
    DatasetConfig,
    ImageFolderConfig,
    KarpathyConfig,
    ManifestConfig,
    dataset_config,
    dataset_section,
)
from vislang.data.benchmark.wds import ShardImages

__all__ = [
    "DATASET_FORMATS",
    "ArrayImages",
    "BytesImages",
    "CifarConfig",
    "Classification",
    "ClipBenchmarkConfig",
    "Counts",
    "DatasetConfig",
    "FileImages",
    "ImageFolderConfig",
    "ImageSet",
    "KarpathyConfig",
    "ManifestConfig",
    "PixelImages",
    "Retrieval",
    "ShardImages",
    "dataset_config",
    "dataset_section",
    "decode_or_fail",
]
