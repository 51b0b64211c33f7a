"""What the training loop sets up before its first step: device, tokenizer, and
the objective with its optimizer, schedule and scaler, fresh or restored from a checkpoint.

The order of the random draws here is part of a run's identity (the same seed gives the same
weights), so it is kept as it is: the global seed, the tokenizer, the objective's weights, the
optimizer; then, under torchrun, a per-rank seed; then, when resuming, the saved RNG state.
"""

from __future__ import annotations

import contextlib
import copy
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vislang.checkpoint import read_model
from vislang.classes import ClassTask
from vislang.data import Source, build_source, labelled_batches, tokenizer_corpus
from vislang.errors import CheckpointError, ConfigError
from vislang.eval.probes import fit_logistic
from vislang.experiment import RunConfig, build_objective
from vislang.models.positions import adapt_positions
from vislang.models.text.transformer import set_context_length
from vislang.models.vision.vit import set_image_size
from vislang.objectives import Objective
from vislang.objectives.base import StartContext
from vislang.restore import as_trained, with_inputs
from vislang.rng import set_rng_state
from vislang.tokenizer_stats import build_from_section
from vislang.tokenizers import BPETokenizer
from vislang.train.distributed import Ranks, load_training_state, shard_blocks
from vislang.train.ema import ParameterCopy, WeightEMA
from vislang.train.init_from import check_start_architecture, init_objective_from, init_tower_from
from vislang.train.lora import apply_lora, lora_rules
from vislang.train.optim import (
    apply_layer_decay,
    apply_param_rules,
    build_optimizer,
    build_scheduler,
    freeze_norm_statistics,
    param_rules,
)
from vislang.train.regularizers import L2SP


def read_start(path: str) -> dict:
    """The model a fine-tune starts from; a missing or unreadable one is one line naming the field."""
    try:
        return read_model(path)
    except CheckpointError as error:
        raise CheckpointError(f"train.init_from: {error}") from None


def run_classes(sources: dict[str, Source], checkpoint: dict | None) -> ClassTask | None:
    """The classes of the run's labelled source (the one saved with a checkpoint when resuming:
    the head's rows keep their meaning), or None for captioned data."""
    labelled = [s for s in sources.values() if s.labelled]
    current = labelled[0].classes if labelled else None
    if checkpoint is not None and checkpoint.get("classes"):
        where = f"checkpoint of step {checkpoint.get('step')}"
        saved = ClassTask.from_json(checkpoint["classes"], where)
        if current is not None and saved.classnames != current.classnames:
            raise ConfigError(
                f"--resume: the labelled source's classes ({len(current)}) are not the {where}'s ({len(saved)}): "
                "its head predicts those; resume with the data it was trained on, or start a new run"
            )
        return saved
    return current


def start_context(cfg: RunConfig, tokenizer: BPETokenizer, sources: dict[str, Source], device) -> StartContext:
    """What :meth:`Objective.start` may use: the tokenizer, and the labelled source's images."""
    v = cfg.model.vision
    batches = None
    if cfg.data.labelled():  # a view without training augmentation: a probe is fitted on the images as they are
        plain = build_source(cfg.data, cfg.data.sources[0], v.image_size, cfg.train.seed, train=False, check=False)
        batches = lambda n, size: labelled_batches(plain, v.image_mean, v.image_std, n, size)  # noqa: E731
    return StartContext(tokenizer, device, batches, fit_logistic)


def check_stages(cfg: RunConfig) -> None:
    """Refuse a stage (``train.stages``) whose sizes the model cannot take (an image size the
    patches do not divide), or that a part sized once by the first inputs could not follow (a
    decoder's positions, MAE's pixel decoder, the hard-negative bank, CiT's prompts: the
    objective's ``stage_inputs``), before anything is written: the switch comes mid-run."""
    objective = cfg.objective
    for i, stage in enumerate(cfg.train.stages):
        try:
            with_inputs(cfg, stage.image_size, stage.context_length)
        except ConfigError as error:
            raise ConfigError(f"train.stages.{i}: {error}") from None
        for name in ("image_size", "context_length"):
            if getattr(stage, name) is not None and name not in objective.stage_inputs:
                raise ConfigError(
                    f"train.stages.{i}.{name}: the {objective.kind} objective cannot change it during training"
                )
        resized = stage.image_size is not None or stage.context_length is not None
        if resized and getattr(objective, "hard_negative_images", 0):
            raise ConfigError(f"train.stages.{i}: objective.hard_negative_images keeps a bank of the first sizes")
        if stage.context_length is not None and cfg.data.cit is not None:
            raise ConfigError(f"train.stages.{i}.context_length: data.cit tokenizes its prompts once, at the start")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} requested but CUDA is not available")
    return device


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def build_tokenizer(cfg: RunConfig, sources: dict[str, Source], start: dict | None = None) -> BPETokenizer:
    """The run's tokenizer: a pretrained text tower's, the one of the model fine-tuned from
    (``start``, read from ``train.init_from``), a named file, or one trained on the captions."""
    t, context = cfg.tokenizer, cfg.model.text.context_length
    if cfg.model.text.pretrained:  # a pretrained text encoder brings its own tokenizer
        return BPETokenizer.pretrained(cfg.model.text.pretrained, context)
    if start is not None:  # the ids the starting weights were trained with
        if "tokenizer" not in start:
            raise CheckpointError(f"{cfg.train.init_from}: not a vislang checkpoint (no tokenizer)")
        return BPETokenizer.from_json(start["tokenizer"], context)
    if t.kind == "openai" or t.path:  # nothing to train: the captions are not read
        return build_from_section(t, [], context)
    return build_from_section(t, tokenizer_corpus(sources, t.train_texts), context)


@dataclass
class Trainable:
    """The objective and what updates it, at the step where training (re)starts."""

    objective: Objective
    tokenizer: BPETokenizer
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    step: int
    counts: Counter
    notes: list[str]
    # penalties on the weights added to the loss, by the name they are logged under (L2-SP)
    regularizers: dict[str, Callable[[], torch.Tensor]] = field(default_factory=dict)
    ema: WeightEMA | None = None  # the weights evaluation and export use, when kept

    def after_step(self, step: int) -> None:
        """What follows optimizer step ``step`` (counted from 1) besides the schedule."""
        if self.ema is not None:
            self.ema.update(step)

    def evaluation_weights(self) -> contextlib.AbstractContextManager:
        """The weights in the objective while it is evaluated: the moving average where one is kept."""
        return self.ema.applied() if self.ema is not None else contextlib.nullcontext()

    def resize_inputs(self, image_size: int, context_length: int) -> list[str]:
        """Switch to a stage's input sizes (``train.stages``), in place: the towers' positions
        resized (:mod:`vislang.models.positions`), the optimizer's moments of those positions
        resized the same way (moments that were never negative clamped at 0, as the second
        moment must be), and the tokenizer at the new context length. Returns the log lines."""
        named = dict(self.objective.named_parameters())
        before = {name: param.shape for name, param in named.items()}
        lines = set_image_size(self.objective, image_size) + set_context_length(self.objective, context_length)
        for name, param in named.items():
            state = self.optimizer.state.get(param, {})
            for key, value in state.items():
                if param.shape == before[name] or not torch.is_tensor(value) or value.shape != before[name]:
                    continue
                moments = {name: value}
                adapt_positions(self.objective, moments)
                state[key] = moments[name].clamp(min=0) if bool((value >= 0).all()) else moments[name]
        if context_length != self.tokenizer.context_length:
            self.tokenizer = copy.copy(self.tokenizer)  # the evaluators' and loader's one is replaced, not changed
            self.tokenizer.context_length = context_length
        return lines

    def extra_state(self) -> dict:
        """Checkpoint entries beyond the model, optimizer and schedule: the weight average
        (``ema``) and the regularizers' anchors (``regularizers``). A collective under FSDP."""
        state: dict = {"ema": self.ema.state_dict()} if self.ema is not None else {}
        anchors = {k: r.state_dict() for k, r in self.regularizers.items() if isinstance(r, ParameterCopy)}
        return state | ({"regularizers": anchors} if anchors else {})

    def load_extra_state(self, checkpoint: dict) -> None:
        """Restore what :meth:`extra_state` saved (the resume check has matched the configs)."""
        where = f"checkpoint of step {checkpoint.get('step')}"
        anchors = checkpoint.get("regularizers") or {}
        wanted = [("ema", self.ema, checkpoint.get("ema"))] if self.ema is not None else []
        wanted += [(f"regularizers.{k}", r, anchors.get(k)) for k, r in self.regularizers.items()
                   if isinstance(r, ParameterCopy)]  # fmt: skip
        for key, part, saved in wanted:
            if saved is None:
                raise CheckpointError(f"{where}: no {key} saved in it to resume from")
            part.load_state_dict(saved, f"{where}, {key}")


def build_trainable(
    cfg: RunConfig,
    run_dir: Path,
    sources: dict[str, Source],
    checkpoint: dict | None,
    ranks: Ranks,
    device: torch.device,
) -> Trainable:
    """A fresh objective (seeded by ``train.seed``) or, given one, the state of a checkpoint."""
    t = cfg.train
    start = read_start(t.init_from) if t.init_from and checkpoint is None else None
    # a checkpoint taken in a later stage (train.stages) holds a model of that stage's sizes
    sized = as_trained(cfg, checkpoint["step"]) if checkpoint is not None else cfg
    if checkpoint is not None:
        tokenizer = BPETokenizer.from_json(checkpoint["tokenizer"], sized.model.text.context_length)
    else:
        tokenizer = build_tokenizer(cfg, sources, start)
    if ranks.main:
        tokenizer.save(run_dir / "tokenizer.json")
    classes = run_classes(sources, checkpoint)
    objective = build_objective(sized, tokenizer.vocab_size, tokenizer.pad_id, classes).to(device)
    notes = []
    if start is not None:
        check_start_architecture(cfg, start, t.init_from)
        notes.append(init_objective_from(objective, start, t.init_from))
    if cfg.model.vision.init_from and checkpoint is None:
        resized: list[str] = []
        loaded, fresh = init_tower_from(objective.model.vision, cfg.model.vision.init_from, "model.vision.", resized)
        notes.append(
            f"image tower: {loaded} tensors from {cfg.model.vision.init_from}"
            + (f"; fresh: {', '.join(fresh)}" if fresh else "")
            + (f"; {'; '.join(resized)}" if resized else "")
        )
    if checkpoint is None:  # a head fitted to the start (zero-shot, a probe): before adapters and the optimizer
        notes += objective.start(start_context(cfg, tokenizer, sources, device))
    if t.lora is not None:  # after init_from (it loads plain layers), before the rules and any state is loaded
        notes.append(apply_lora(objective, t.lora))
    # freezing (LiT), lr scales, decay; with LoRA a last rule freezes all but the adapters
    settings = apply_param_rules(objective, param_rules(cfg.model, t, cfg.objective.param_rules()) + lora_rules(t.lora))
    if t.layer_decay is not None:
        notes.append(apply_layer_decay(objective, settings, t.layer_decay))
    objective.frozen_norms = tuple(freeze_norm_statistics(objective))
    if t.fsdp:
        shard_blocks(objective)  # before the optimizer: it must hold the sharded parameters
    optimizer = build_optimizer(objective, t, settings)
    scheduler = build_scheduler(optimizer, t)
    scaler = torch.amp.GradScaler(device.type, enabled=t.precision == "fp16")
    # both copy the trainable weights as they start (after init_from); a resume overwrites them
    regularizers = {"l2_sp": L2SP(objective, t.l2_sp)} if t.l2_sp > 0 else {}
    ema = WeightEMA(objective, t.ema_decay, t.ema_start) if t.ema_decay is not None else None
    step = 0
    if checkpoint is not None:
        load_training_state(objective, optimizer, checkpoint["model"], checkpoint["optimizer"], t.fsdp)
        scheduler.load_state_dict(checkpoint["scheduler"])
        if "scaler" in checkpoint:
            scaler.load_state_dict(checkpoint["scaler"])
        step = checkpoint["step"]
    if ranks.world > 1:
        torch.manual_seed(t.seed + 7919 * ranks.rank)  # FLIP masks differ between ranks
    if checkpoint is not None:
        states = checkpoint.get("rng_ranks", [checkpoint["rng"]])
        set_rng_state(states[ranks.rank] if ranks.rank < len(states) else states[0])
    # Data counters from the batches ("skipped/<reason>", "negatives/<rule>"), summed over ranks
    # when logged and saved; a resumed run's totals restart on rank 0.
    counts: Counter[str] = Counter(checkpoint["data"]["counts"] if checkpoint and ranks.main else {})
    parts = Trainable(objective, tokenizer, optimizer, scheduler, scaler, step, counts, notes, regularizers, ema)
    if checkpoint is not None:
        parts.load_extra_state(checkpoint)
    return parts
