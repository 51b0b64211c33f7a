"""An ONNX export opened as a vislang model: the towers run by onnxruntime, the API unchanged.

:class:`OnnxTwoTower` has what callers of ``vislang.load`` use on a two-tower model:
``encode_image`` / ``encode_text`` (torch tensors in, normalised embeddings out, on the input's
device), ``scale()`` / ``bias()`` and the ``logit_scale`` parameter, whose device is where
``vislang embed`` and the evaluators put their batches. Wrapped in the embedding objective the
PyTorch two-tower models use, it is scored exactly as they are, so ``vislang embed`` and
``vislang eval`` (with the run config saved beside the graphs) need nothing else.

The graphs run on the CPU execution provider. Its intra-op threads default to PyTorch's
``torch.get_num_threads()``, so a process that limits PyTorch's threads limits these too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vislang.checkpoint import CONFIG
from vislang.errors import CheckpointError, ConfigError, first_line
from vislang.experiment import RunConfig
from vislang.files import read_json, read_text
from vislang.models.logit_scale import LogitScaleMixin
from vislang.models.text.transformer import real_tokens
from vislang.objectives.contrastive import EmbeddingObjective
from vislang.onnx.manifest import MIN_SEQUENCE, Manifest, Preprocess, preprocess_fields, read_manifest
from vislang.restore import saved_config
from vislang.tokenizers import BPETokenizer


def onnxruntime_module() -> Any:
    """onnxruntime, or a one-line error saying how to install it (it is an optional extra)."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("running an ONNX export needs onnxruntime: pip install 'vislang[onnx]'") from None
    return onnxruntime


def make_session(path: Path, threads: int) -> Any:
    """An onnxruntime session of the graph at ``path`` on the CPU with ``threads`` intra-op threads."""
    ort = onnxruntime_module()
    if not path.is_file():
        raise CheckpointError(f"ONNX graph not found: {path}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its warnings would interleave with progress bars
    # onnxruntime's idle workers otherwise spin after each run, taking the cores from the PyTorch work
    # (preprocessing, scoring) that comes between the calls in the same process
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's own exception types; a broken file is one line
        raise CheckpointError(f"{path}: not a readable ONNX graph ({first_line(error)})") from None


class OnnxTwoTower(LogitScaleMixin, nn.Module):
    """The two ONNX towers of an export directory, as a model with ``encode_image`` / ``encode_text``."""

    def __init__(self, directory: str | Path, manifest: Manifest, threads: int | None = None) -> None:
        super().__init__()
        self.add_logit_scale(manifest.logit_scale, manifest.max_logit_scale, manifest.logit_bias)
        self.requires_grad_(False)  # nothing here trains: the weights are inside the graphs
        self.directory, self.manifest = Path(directory), manifest
        self.embed_dim, self.context_length = manifest.embed_dim, manifest.context_length
        self.image_size = manifest.preprocess.image_size
        self.set_threads(threads or torch.get_num_threads())

    def set_threads(self, threads: int) -> None:
        """(Re)open both sessions with ``threads`` intra-op threads."""
        if threads < 1:
            raise ConfigError(f"onnxruntime threads must be at least 1, got {threads}")
        self.threads = threads
        sessions = []
        for encoder in (self.manifest.image_encoder, self.manifest.text_encoder):
            session = make_session(self.directory / encoder.file, threads)
            names = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
            if encoder.input not in names[0] or encoder.output not in names[1]:
                raise CheckpointError(
                    f"{self.directory / encoder.file}: has inputs {names[0]} and outputs {names[1]}, the manifest "
                    f"names {encoder.input!r} and {encoder.output!r}"
                )
            sessions.append(session)
        self.image_session, self.text_session = sessions

    def _run(self, session: Any, encoder: Any, array: np.ndarray, device: torch.device) -> torch.Tensor:
        if array.shape[0] == 0:
            return torch.zeros(0, self.embed_dim, device=device)
        out = session.run([encoder.output], {encoder.input: array})[0]
        return torch.from_numpy(out).to(device)

    @staticmethod
    def _normalised(normalize: bool) -> None:
        if not normalize:
            raise ValueError("an ONNX export holds normalised embeddings; normalize=False needs the PyTorch weights")

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Normalised embeddings [B, D] of preprocessed images [B, 3, S, S]."""
        self._normalised(normalize)
        size = self.image_size
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise ValueError(f"images of shape {tuple(images.shape)}; this image encoder takes [B, 3, {size}, {size}]")
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        return self._run(self.image_session, self.manifest.image_encoder, array, images.device)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Normalised embeddings [B, D] of token ids [B, context_length] (the tokenizer's output); where
        the tower ignores padding, the batch is cut after its longest text first, as in PyTorch."""
        self._normalised(normalize)
        if tokens.dim() != 2 or tokens.shape[1] != self.context_length:
            raise ValueError(
                f"tokens of shape {tuple(tokens.shape)}; this text encoder takes [B, {self.context_length}] "
                "(the tokenizer's output)"
            )
        if self.manifest.trim_padding and len(tokens):  # the cut the PyTorch tower makes, into the graph's axis
            longest = int(real_tokens(tokens, self.manifest.pad_id).sum(dim=1).max().item())
            tokens = tokens[:, : max(longest, MIN_SEQUENCE)]
        array = tokens.detach().to("cpu", torch.int64).contiguous().numpy()
        return self._run(self.text_session, self.manifest.text_encoder, array, tokens.device)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(images), self.encode_text(tokens)

    def extra_repr(self) -> str:
        return f"{self.directory}, onnxruntime CPU, {self.threads} threads"


def _check_preprocess(manifest: Manifest, cfg: RunConfig, path: Path) -> None:
    """The manifest's preprocessing (what outside readers use) and the run config's (what
    ``make_preprocess`` uses) must be one: a directory edited in one place only is refused."""
    saved = Preprocess.model_validate(preprocess_fields(cfg))
    for key, value in manifest.preprocess.model_dump().items():
        if getattr(saved, key) != value:
            raise CheckpointError(
                f"{path}: onnx_config.json says preprocess.{key} {value!r}, config.json {getattr(saved, key)!r}"
            )


def load_onnx_objective(
    path: str | Path, device: str | torch.device = "cpu", threads: int | None = None
) -> tuple[EmbeddingObjective, BPETokenizer, RunConfig]:
    """(objective in eval mode, tokenizer, run config) of a vislang ONNX directory: the towers run
    by onnxruntime with ``threads`` intra-op threads (default: ``torch.get_num_threads()``)."""
    path = Path(path)
    manifest = read_manifest(path)
    cfg = saved_config({"config": read_json(path / CONFIG, "export config", CheckpointError)}, path, export=True)
    _check_preprocess(manifest, cfg, path)
    try:
        tokenizer = BPETokenizer.from_json(
            read_text(path / manifest.tokenizer, "tokenizer file", CheckpointError), manifest.context_length
        )
    except ConfigError as error:
        raise CheckpointError(f"{path / manifest.tokenizer}: {error}") from None
    for role in ("pad_id", "sot_id", "eot_id"):
        if getattr(tokenizer, role) != getattr(manifest, role):
            raise CheckpointError(
                f"{path}: the tokenizer's {role} is {getattr(tokenizer, role)}, the manifest says {getattr(manifest, role)}"
            )
    objective = EmbeddingObjective(OnnxTwoTower(path, manifest, threads))
    return objective.eval().to(device), tokenizer, cfg
