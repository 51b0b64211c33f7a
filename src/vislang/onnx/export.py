"""A vislang model's two towers as ONNX graphs with a dynamic batch axis, checked against PyTorch.

Each tower is captured with ``torch.export`` (the exporter PyTorch maintains; its TorchScript
predecessor is deprecated) and translated by ``torch.onnx``. Two things of the PyTorch towers do
not translate as they are, and are handled here without changing what is computed:

- ``torch.cummax`` (where a text ends: ``real_tokens``) has no ONNX operator; it is decomposed
  into comparisons of every position with every earlier one (:func:`cummax_by_comparison`),
  which gives the same values and indices.
- In eval mode vislang's text transformer cuts a batch after its longest text, a cut that reads
  the data (and is exact: real tokens never see the padding). A graph cannot take its shape from
  the data, so the graph gets a dynamic sequence axis instead (2 to the context length) and the
  runtime makes the cut before calling it (:mod:`vislang.onnx.runtime`). Where the tower does not
  cut (CoCa's, a Hugging Face encoder's, a bidirectional tower attending to its padding) the axis
  is the full context, as it is where the installed PyTorch cannot export the dynamic axis.

The graphs output what ``model.encode_image`` / ``model.encode_text`` return: L2-normalised
embeddings. After writing, the graphs are run by onnxruntime at two batch sizes other than the
traced one and compared with PyTorch, so an export that would compute something else is refused.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental import _config as fx_config

from vislang.checkpoint import CONFIG, TOKENIZER
from vislang.errors import CheckpointError, ConfigError, first_line
from vislang.experiment import RunConfig
from vislang.models.text.transformer import TextTransformer
from vislang.objectives import Objective
from vislang.objectives.contrastive import EmbeddingObjective
from vislang.onnx import manifest as m
from vislang.onnx.runtime import OnnxTwoTower, onnxruntime_module
from vislang.tokenizers import BPETokenizer

TOLERANCE = 1e-4  # max |onnxruntime - PyTorch| an export may differ by
CHECK_BATCHES = (1, 5)  # run after export: 1 and a size other than the traced one
TRACE_BATCH = 2  # the example batch: 0 and 1 would be specialised away by torch.export
CHECK_TEXTS = ["a photo of a dog", "", "two red squares above a small blue circle", "a", "the end of the text"]


def cummax_by_comparison(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.cummax(x, dim)`` from comparisons (L^2 per row along ``dim``): ONNX has no cumulative
    maximum. Ties give the latest index, as torch's does."""
    d = dim % x.dim()
    y = x.movedim(d, -1)
    values = y.to(torch.float32) if y.dtype == torch.bool else y
    n = y.shape[-1]
    index = torch.arange(n, device=x.device)
    seen = index[None, :] <= index[:, None]  # [i, j]: position j is at or before i
    lowest = torch.finfo(values.dtype).min if values.is_floating_point() else torch.iinfo(values.dtype).min
    rows = values.unsqueeze(-2)  # [..., 1, n] against [..., n (i), n (j)]
    best = torch.where(seen, rows, torch.full((), lowest, dtype=values.dtype, device=x.device)).amax(-1)
    hit = seen & (rows == best.unsqueeze(-1))
    where = torch.where(hit, index, torch.full((), -1, dtype=index.dtype, device=x.device)).amax(-1)
    return best.to(x.dtype).movedim(-1, d), where.movedim(-1, d)


class ImageEncoder(nn.Module):
    """images [B, 3, S, S] -> normalised embeddings [B, D]: the model's ``encode_image``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(image)


class TextEncoder(nn.Module):
    """tokens [B, context] -> normalised embeddings [B, D]: the model's ``encode_text``, with
    vislang's text transformer run over the full context (its eval-mode cut reads the data)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        text = getattr(self.model, "text", None)
        if isinstance(text, TextTransformer):
            return F.normalize(text.proj(text.pool(text.tokens(tokens), tokens)), dim=-1)
        return self.model.encode_text(tokens)


def check_exportable(objective: Objective, kind: str) -> None:
    """Refuse, in one line, an objective whose use needs more than its two towers' embeddings."""
    model = getattr(objective, "model", None)
    towers = hasattr(model, "encode_image") and hasattr(model, "encode_text")
    if not isinstance(objective, EmbeddingObjective) or not towers:
        raise ConfigError(
            f"vislang export --format onnx: a {kind} model does not score by image and text embeddings; ONNX export "
            "writes the two towers of embedding models (clip, siglip, flyp, coca)"
        )
    if objective.classes is not None:
        raise ConfigError(
            f"vislang export --format onnx: a {kind} model classifies with its own head or learned prompts over "
            f"{len(objective.classes)} classes, which the two ONNX towers would leave out"
        )
    if getattr(model, "temporal", None) is not None:
        raise ConfigError(
            "vislang export --format onnx: the image tower pools video frames (model.vision.temporal), which the "
            "still-image ONNX graph would leave out; export with --format safetensors"
        )


def _require_exporter() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ConfigError(
            f"ONNX export needs onnx and onnxscript ({first_line(error)}): pip install 'vislang[onnx]'"
        ) from None


def size_oblivious() -> contextlib.AbstractContextManager:
    """torch.export's size-oblivious reasoning about dynamic sizes: without it, slicing the position
    table to a symbolic sequence length makes the exporter pin the length to one value. A private
    setting of PyTorch; where it is missing, nothing is patched (the export then falls back)."""
    if not hasattr(fx_config, "backed_size_oblivious"):
        return contextlib.nullcontext()
    return fx_config.patch(backed_size_oblivious=True)


def export_graph(module: nn.Module, example: torch.Tensor, names: tuple[str, str], out: Path, sequence: int = 0) -> int:
    """Write ``module`` (one tensor in, one out: ``names``) as an ONNX file whose first axis is
    dynamic, and with ``sequence`` > 0 also its second (2 to ``sequence``); returns the opset."""
    axes = {0: torch.export.Dim(m.BATCH, min=1)}
    if sequence:
        axes[1] = torch.export.Dim(m.SEQUENCE, min=m.MIN_SEQUENCE, max=sequence)
    shapes = (axes,)
    try:
        with (
            torch.no_grad(),
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),  # the exporters' progress lines
            contextlib.redirect_stderr(io.StringIO()),  # the optimizer's notes on folds it skipped
            size_oblivious() if sequence else contextlib.nullcontext(),
        ):
            warnings.simplefilter("ignore")  # the exporters' notes on internals; the outputs are checked instead
            program = torch.export.export(module, (example,), dynamic_shapes=shapes)
            program = program.run_decompositions({torch.ops.aten.cummax.default: cummax_by_comparison})
            onnx_program = torch.onnx.export(program, (example,), None, input_names=[names[0]],
                                             output_names=[names[1]], dynamic_shapes=shapes, dynamo=True,
                                             verbose=False)  # fmt: skip
            onnx_program.save(str(out))
    except Exception as error:  # torch.export / torch.onnx raise many types; each is one line for the user
        raise ConfigError(f"cannot export {out.name}: {type(error).__name__}: {first_line(error)}") from None
    return next((o.version for o in onnx_program.model_proto.opset_import if o.domain == ""), 0)


def export_text_graph(model: nn.Module, tokens: torch.Tensor, out: Path) -> bool:
    """Write the text graph; returns whether it has the dynamic sequence axis (the runtime then
    cuts the padding as the PyTorch tower does). Only a tower that cuts its padding gets it."""
    text = getattr(model, "text", None)
    names = (m.TEXT_INPUT, m.TEXT_OUTPUT)
    if isinstance(text, TextTransformer) and text.without_padding(tokens).shape[1] < tokens.shape[1]:
        try:
            export_graph(TextEncoder(model), tokens, names, out, sequence=tokens.shape[1])
            return True
        except ConfigError:  # this PyTorch cannot export the axis: the full context, exact all the same
            pass
    export_graph(TextEncoder(model), tokens, names, out)
    return False


def _examples(cfg: RunConfig, tokenizer: BPETokenizer, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (seeded noise) and tokens (texts of several lengths) of ``batch`` samples."""
    size = cfg.model.vision.image_size
    generator = torch.Generator().manual_seed(batch)
    images = torch.randn(batch, 3, size, size, generator=generator)
    texts = [CHECK_TEXTS[i % len(CHECK_TEXTS)] for i in range(batch)]
    return images, tokenizer(texts)


def manifest_of(model: nn.Module, tokenizer: BPETokenizer, cfg: RunConfig, opset: int, trims: bool) -> dict:
    """The ``onnx_config.json`` contents of ``model``'s export (``checked`` filled in after the check)."""
    size, context = cfg.model.vision.image_size, tokenizer.context_length
    bias = model.bias()
    manifest = {
        "format": m.FORMAT,
        "format_version": m.FORMAT_VERSION,
        "objective": cfg.objective.kind,
        "embed_dim": cfg.model.embed_dim,
        "image_encoder": {"file": m.IMAGE_FILE, "input": m.IMAGE_INPUT, "output": m.IMAGE_OUTPUT,
                          "shape": [m.BATCH, 3, size, size], "dtype": "float32"},
        "text_encoder": {"file": m.TEXT_FILE, "input": m.TEXT_INPUT, "output": m.TEXT_OUTPUT,
                         "shape": [m.BATCH, m.SEQUENCE if trims else context], "dtype": "int64"},
        "trim_padding": trims,
        "tokenizer": TOKENIZER,
        "context_length": context,
        "pad_id": tokenizer.pad_id,
        "sot_id": tokenizer.sot_id,
        "eot_id": tokenizer.eot_id,
        "tokenizer_kind": tokenizer.kind,
        "preprocess": m.preprocess_fields(cfg),
        "logit_scale": model.scale().item(),
        "max_logit_scale": round(math.exp(model.max_log_scale), 6),
        "logit_bias": None if bias is None else bias.item(),
        "opset": opset,
        "torch": torch.__version__,
        "checked": {},
    }  # fmt: skip
    return m.Manifest.model_validate(manifest).model_dump(mode="json")


@torch.no_grad()
def check_against_pytorch(model: nn.Module, onnx_model: nn.Module, cfg: RunConfig, tokenizer: BPETokenizer) -> dict:
    """Max |onnxruntime - PyTorch| of both towers at :data:`CHECK_BATCHES`; more than
    :data:`TOLERANCE` is an error (the graph would compute something else than the model)."""
    worst = {"image": 0.0, "text": 0.0}
    for batch in CHECK_BATCHES:
        images, tokens = _examples(cfg, tokenizer, batch)
        pairs = {
            "image": (model.encode_image(images), onnx_model.encode_image(images)),
            "text": (model.encode_text(tokens), onnx_model.encode_text(tokens)),
        }
        for tower, (expected, got) in pairs.items():
            worst[tower] = max(worst[tower], (expected.float() - got).abs().max().item())
    for tower, difference in worst.items():
        if not difference <= TOLERANCE:
            raise CheckpointError(
                f"the exported {tower} encoder differs from PyTorch by {difference:.2e} (more than {TOLERANCE:g}) "
                f"at batch sizes {list(CHECK_BATCHES)}; no {m.MANIFEST} was written"
            )
    return {"batch_sizes": list(CHECK_BATCHES), "max_abs_difference": worst, "tolerance": TOLERANCE}


def export_onnx(objective: Objective, tokenizer: BPETokenizer, cfg: RunConfig, out: str | Path) -> tuple[Path, dict]:
    """Write the towers of a (CPU, LoRA-free) objective as an ONNX directory; returns it and the
    check against PyTorch. The manifest is written last, once the check passed, so a failed export
    leaves no directory that would open as one."""
    check_exportable(objective, cfg.objective.kind)
    _require_exporter()
    onnxruntime_module()  # the check after export runs the graphs: fail before minutes of exporting
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / m.MANIFEST).unlink(missing_ok=True)  # an earlier export's manifest must not vouch for these files
    model, was_training = objective.model, objective.training
    objective.eval()
    try:
        images, tokens = _examples(cfg, tokenizer, TRACE_BATCH)
        opset = export_graph(ImageEncoder(model), images, (m.IMAGE_INPUT, m.IMAGE_OUTPUT), out / m.IMAGE_FILE)
        trims = export_text_graph(model, tokens, out / m.TEXT_FILE)
        (out / TOKENIZER).write_text(tokenizer.to_json())
        (out / CONFIG).write_text(json.dumps(cfg.model_dump(mode="json"), indent=2) + "\n")
        manifest = manifest_of(model, tokenizer, cfg, opset, trims)
        checked = check_against_pytorch(model, OnnxTwoTower(out, m.Manifest.model_validate(manifest)), cfg, tokenizer)
    finally:
        objective.train(was_training)
    (out / m.MANIFEST).write_text(json.dumps(manifest | {"checked": checked}, indent=2) + "\n")
    return out, checked
