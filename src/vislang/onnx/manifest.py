"""The ONNX directory's manifest, ``onnx_config.json``: what opens the two ONNX graphs without PyTorch.

``vislang export --format onnx`` writes ``image_encoder.onnx`` and ``text_encoder.onnx`` beside
``tokenizer.json``, ``config.json`` (the run config, which vislang's own evaluation reads) and this
manifest. The manifest says what a reader in any language needs: the graphs' files and tensor
names, the image preprocessing (size, mean, std, resize mode, interpolation), the tokenizer's
context length and padding id, and the temperature (and SigLIP's bias) that turn cosine
similarities into logits. A directory is a vislang ONNX export because its manifest says so in its
``"format"`` key, never because of the files that happen to lie in it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator

from vislang.config.base import Section, format_error
from vislang.errors import CheckpointError
from vislang.experiment import RunConfig
from vislang.files import read_json

MANIFEST = "onnx_config.json"
FORMAT = "vislang-onnx"
FORMAT_VERSION = 1
IMAGE_FILE, TEXT_FILE = "image_encoder.onnx", "text_encoder.onnx"
IMAGE_INPUT, IMAGE_OUTPUT = "image", "image_embedding"
TEXT_INPUT, TEXT_OUTPUT = "tokens", "text_embedding"
BATCH = "batch"  # the name of the graphs' dynamic first axis
SEQUENCE, MIN_SEQUENCE = "sequence", 2  # the text graph's dynamic second axis, where it has one


def file_name(name: str) -> str:
    """``name`` if it names a file inside the directory (no folders, no way out of it)."""
    if Path(name).name != name or name in ("", ".", ".."):
        raise ValueError(f"{name!r} is not a file name inside the directory")
    return name


class EncoderFile(Section):
    """One tower's graph: its file in the directory, its input and output tensors."""

    file: str = Field(description="the .onnx file, a name inside the directory")
    input: str = Field(description="the input tensor's name")
    output: str = Field(description="the output tensor's name: L2-normalised embeddings [batch, embed_dim]")
    shape: list[int | str] = Field(description="the input's shape; 'batch' is the dynamic axis")
    dtype: Literal["float32", "int64"] = Field(description="the input's element type")

    _inside = field_validator("file")(lambda cls, name: file_name(name))


class Preprocess(Section):
    """What ``vislang.api.make_preprocess`` reads: resize, then normalise channel by channel."""

    image_size: int = Field(gt=0, description="square input resolution in pixels")
    mean: tuple[float, float, float] = Field(description="per-channel mean of pixels scaled to [0, 1]")
    std: tuple[float, float, float] = Field(description="per-channel standard deviation")
    resize_mode: str = Field(description="data.resize_mode: shortest (resize, centre crop), longest (pad), squash")
    interpolation: str = Field(description="data.interpolation of the resize: bicubic or bilinear")


class Manifest(Section):
    """``onnx_config.json``."""

    format: Literal["vislang-onnx"]
    format_version: Literal[1]
    objective: str = Field(description="the objective the towers were trained with")
    embed_dim: int = Field(gt=0)
    image_encoder: EncoderFile
    text_encoder: EncoderFile
    tokenizer: str = Field("tokenizer.json", description="the tokenizer file (vislang's BPETokenizer JSON)")
    _tokenizer_inside = field_validator("tokenizer")(lambda cls, name: file_name(name))
    trim_padding: bool = Field(
        False,
        description="the text graph takes 2 to context_length tokens per text, and a batch cut after its longest "
        "text (never below 2) gives the same embeddings, faster; otherwise it takes exactly context_length",
    )
    context_length: int = Field(gt=0, description="tokens per text the text encoder takes")
    pad_id: int = Field(ge=0, description="the token id that fills a text up to context_length")
    sot_id: int | None = Field(None, description="the token id that starts every text (none for some tokenizers)")
    eot_id: int = Field(ge=0, description="the token id that ends every text (cut to fit context_length)")
    tokenizer_kind: str = Field(description="trained, openai (texts cleaned with ftfy first) or pretrained")
    preprocess: Preprocess
    logit_scale: float = Field(gt=0, description="multiplies cosine similarities into logits")
    max_logit_scale: float = Field(gt=0, description="the clamp the model applied to its scale")
    logit_bias: float | None = Field(None, description="added to the logits (SigLIP); null for softmax models")
    opset: int | None = Field(None, description="the graphs' ONNX opset")
    torch: str | None = Field(None, description="the PyTorch version that exported the graphs")
    checked: dict = Field({}, description="onnxruntime against PyTorch at export: batch sizes and max |difference|")


def preprocess_fields(cfg: RunConfig) -> dict:
    """The manifest's ``preprocess`` section of a run config (the fields ``make_preprocess`` reads)."""
    vision = cfg.model.vision
    return {
        "image_size": vision.image_size,
        "mean": list(vision.image_mean),
        "std": list(vision.image_std),
        "resize_mode": cfg.data.resize_mode,
        "interpolation": cfg.data.interpolation,
    }


def is_onnx_directory(path: str | Path) -> bool:
    """Whether ``path`` is a directory whose manifest declares ``"format": "vislang-onnx"``. A manifest
    without that key, or naming another format, is an error rather than a silent fallback to the
    other loaders: the directory was meant to be an ONNX export."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        return False
    _format_checked(read_json(path / MANIFEST, "ONNX manifest", CheckpointError), path / MANIFEST)
    return True


def _format_checked(raw: object, where: Path) -> dict:
    if not isinstance(raw, dict) or "format" not in raw:
        raise CheckpointError(f'{where}: no "format" key; a vislang ONNX export\'s manifest has "format": "{FORMAT}"')
    if raw["format"] != FORMAT:
        raise CheckpointError(f'{where}: format {raw["format"]!r} is not "{FORMAT}" (not a vislang ONNX export)')
    if raw.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{where}: format_version {raw.get('format_version')!r}; this vislang reads version {FORMAT_VERSION}"
        )
    return raw


def read_manifest(path: str | Path) -> Manifest:
    """The manifest of the ONNX directory ``path``; anything missing or malformed is one line naming it."""
    where = Path(path) / MANIFEST
    raw = _format_checked(read_json(where, "ONNX manifest", CheckpointError), where)
    try:
        return Manifest.model_validate(raw)
    except ValidationError as error:
        raise CheckpointError(format_error(error, str(where))) from None
