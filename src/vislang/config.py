"""The typed run config: one validated object that *is* the experiment.

Sections mirror the parts of the system (``model``, ``data``, ``tokenizer``, ``train``,
``loss``, ``eval``); the objective is chosen by the explicit ``objective`` field. Validation is
done by pydantic with unknown keys forbidden, so a typo or a wrong type fails before any work
starts, and :func:`load_config` turns the first problem into one line naming the key.

The defaults are the demo: a tiny CLIP that learns the built-in world on a laptop CPU.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from vislang.errors import ConfigError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class VisionConfig(Section):
    # "vit": vislang's ViT (the fields below); "timm": any timm model by name (timm_model), its
    # own global pooling (pool: cls -> "token", mean -> "avg", map -> "map") and a projection.
    kind: Literal["vit", "timm"] = "vit"
    timm_model: str | None = None
    timm_pretrained: str | None = None  # a local weights file for the timm model (never downloaded)
    timm_kwargs: dict[str, Any] = {}  # passed to timm.create_model, e.g. {img_size: 64, drop_path_rate: 0.1}
    image_size: int = 48
    patch_size: int = 8
    width: int = 64
    depth: int = 3
    heads: int = 2
    mlp_ratio: float = 2.0  # the demo's; the CLIP presets use 4
    # "patch": one strided convolution; "conv": log2(patch_size) stride-2 3x3 convolutions
    # (Xiao et al. 2021), which make small ViTs learn shape far faster.
    stem: Literal["patch", "conv"] = "conv"
    pool: Literal["cls", "mean", "map"] = "mean"
    # The patch convolution's bias (OpenCLIP and HF CLIP have none, SigLIP has one).
    patch_bias: bool = True
    # LayerNorm on the tokens before the first block (CLIP has it, SigLIP does not).
    ln_pre: bool = True
    # Projection of the pooled feature to model.embed_dim; "none" (SigLIP) needs embed_dim == width.
    proj: Literal["linear", "none"] = "linear"
    # The MLP activation: "gelu" (exact), "gelu_tanh" (SigLIP) or "quick_gelu" (x * sigmoid(1.702x),
    # OpenAI's original CLIP weights); norm_eps is the LayerNorms' epsilon (SigLIP: 1e-6).
    act: Literal["gelu", "gelu_tanh", "quick_gelu"] = "gelu"
    norm_eps: float = 1e-5
    # "learned" (CLIP: trained from 0.02-scale noise) or "sincos2d" (fixed 2D sine-cosine, MAE and
    # big_vision): the fixed one gives every token its position at full strength from step 0.
    pos_embed: Literal["learned", "sincos2d"] = "learned"
    # FLIP-style random token dropping while training (0 = off); never applied in eval mode.
    mask_ratio: float = 0.0
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    grad_checkpointing: bool = False
    # LiT-style locking: freeze the tower's weights (and keep its BatchNorm statistics fixed),
    # except its last unlocked_blocks transformer blocks and, with any unlocked, its head
    # (final norm, pooling, projection). Shorthand for train.param_rules.
    lock: bool = False
    unlocked_blocks: int = 0
    # Start this tower from another run's image tower: a vislang checkpoint file or run directory
    # (its latest checkpoint), e.g. a Cap or CoCa run for contrastive tuning on a captioning-
    # pretrained encoder (CapPa's LiT evaluation). Tensors the source lacks (a captioner has no
    # projection) start fresh; a resumed run restores its own weights instead.
    init_from: str | None = None

    @model_validator(mode="after")
    def _check(self) -> VisionConfig:
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.kind == "timm":
            if not self.timm_model:
                raise ValueError("model.vision.kind timm needs timm_model (a timm model name)")
            if self.unlocked_blocks:
                raise ValueError("unlocked_blocks applies to the vit tower; unlock timm layers with train.param_rules")
            return self
        if self.timm_model or self.timm_pretrained or self.timm_kwargs:
            raise ValueError("timm_model, timm_pretrained and timm_kwargs need model.vision.kind timm")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.stem == "conv" and (self.patch_size < 2 or self.patch_size & (self.patch_size - 1)):
            raise ValueError(f"the conv stem needs a power-of-two patch_size, got {self.patch_size}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.patch_bias is False and self.stem != "patch":
            raise ValueError("patch_bias applies to the patch stem only")
        return self


class TextConfig(Section):
    context_length: int = 18
    width: int = 64
    depth: int = 2
    heads: int = 2
    mlp_ratio: float = 2.0  # the demo's; the CLIP presets use 4
    # causal + "eot": CLIP; bidirectional + "last"/"mean": SigLIP-style. "eot"/"last": the last
    # token before the padding; "end": the context's final position whatever it holds (SigLIP's
    # released models read it, with texts padded to the full context).
    causal: bool = True
    pool: Literal["eot", "last", "mean", "cls", "end"] = "eot"
    # Bidirectional towers hide padding keys from attention; SigLIP's released models attend to
    # the padding too (false).
    mask_padding: bool = True
    proj_bias: bool = False  # bias of the linear projection (SigLIP's text head has one)
    act: Literal["gelu", "gelu_tanh", "quick_gelu"] = "gelu"  # as model.vision.act
    norm_eps: float = 1e-5
    grad_checkpointing: bool = False
    # A local Hugging Face model directory (config.json, weights, tokenizer.json): its encoder is
    # the text tower and its tokenizer the run's (width/depth/heads/causal are then unused; pool
    # "cls" or "mean"; context_length up to the encoder's positions, e.g. 256 as BiomedCLIP).
    pretrained: str | None = None
    proj: Literal["linear", "mlp"] = "linear"  # projection to the shared embedding
    # LiT-style locking: freeze the tower's weights (and keep its BatchNorm statistics fixed),
    # except its last unlocked_blocks transformer blocks and, with any unlocked, its head
    # (final norm, pooling, projection). Shorthand for train.param_rules.
    lock: bool = False
    unlocked_blocks: int = 0

    @model_validator(mode="after")
    def _check(self) -> TextConfig:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.context_length < 3:
            raise ValueError(f"context_length must be at least 3, got {self.context_length}")
        if self.pretrained and self.pool not in ("cls", "mean"):
            raise ValueError(f"a pretrained text encoder pools with cls or mean, not {self.pool!r}")
        if self.pretrained and self.unlocked_blocks:
            raise ValueError(
                "unlocked_blocks does not apply to a pretrained encoder; unfreeze its layers with train.param_rules"
            )
        return self


class DecoderConfig(Section):
    """The text decoder of the captioning objectives (cap, cappa) and CoCa.

    It shares ``model.text``'s width, heads, MLP ratio and context length. ``depth`` counts the
    multimodal blocks (causal self-attention + cross-attention to the image); CoCa puts
    ``model.text.depth`` unimodal (text-only) blocks before them, Cap none.
    """

    depth: int = 2
    # CoCa's captioning pooler: this many learned queries attend over the image tokens and form
    # the decoder's context (the paper uses 256; the contrastive pooler has one query).
    n_queries: int = 256


class ModelConfig(Section):
    # A named architecture from vislang.models.presets; fields given beside it override it.
    preset: str | None = None
    embed_dim: int = 64
    # "auto": plain attention on CPUs except emulated bf16/fp16, the fused kernel elsewhere (models/layers.py)
    attn_impl: Literal["auto", "sdpa", "math"] = "auto"
    init_logit_scale: float = 1 / 0.07
    max_logit_scale: float = 100.0
    # None: no learnable bias (CLIP); a number: learnable bias with that start (SigLIP: -10).
    init_logit_bias: float | None = None
    vision: VisionConfig = VisionConfig()
    text: TextConfig = TextConfig()
    decoder: DecoderConfig = DecoderConfig()

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.vision.kind == "vit" and self.vision.proj == "none" and self.vision.width != self.embed_dim:
            raise ValueError(
                f"model.vision.proj none needs embed_dim ({self.embed_dim}) equal to the vision width ({self.vision.width})"
            )
        return self


class WorldConfig(Section):
    seed: int = 0
    two_object_prob: float = 0.5
    partial_caption_prob: float = 0.3
    distinct_colors: bool = False  # two objects always differ in colour (the compositional study)
    # two-object captions name the left (or upper) object first ("X to the left of Y", "X above
    # Y"), as people tend to describe a scene; off: either wording at random (the study)
    reading_order: bool = False


class SourceConfig(Section):
    """One training source. ``kind``: "world" (the built-in world, settings in ``data.world``),
    "table" (a .csv / .tsv / .parquet file at ``path``), "folder" (images with .txt / .json
    captions under ``path``) or "shards" (webdataset tars; ``path`` may use braces and ``::``:
    ``shards/{00000..00099}.tar``). With several sources, ``weight`` sets each one's share."""

    kind: Literal["world", "table", "folder", "shards"] = "world"
    path: str | None = None
    name: str | None = None  # for the per-source counts in the logs (default: kind and index)
    weight: float = 1.0
    image_column: str = "image"  # tables: a path (relative to the table) or encoded bytes
    caption_columns: list[str] = ["caption"]
    # several captions per image (columns or a folder JSON list): a seeded random one per visit,
    # or always the first.
    caption_pick: Literal["random", "first"] = "random"
    # Shards: "random" access through a header index of local tars (exact resume, global
    # shuffle), "stream" through webdataset (remote URLs and pipe: commands always stream);
    # "auto" streams exactly when some shard is remote.
    access: Literal["auto", "random", "stream"] = "auto"
    # Endless sampling with replacement instead of epochs ("virtual epochs"): rows for tables,
    # folders and random-access shards, whole shards for streams.
    resampled: bool = False
    shuffle_buffer: int = 1000  # streams: raw samples in the seeded shuffle buffer (0: none)
    # Tables, folders and random-access shards: a fresh seeded permutation every epoch; false reads
    # the stored order every epoch (data written already shuffled, such as `vislang data synth`'s).
    shuffle: bool = True

    @model_validator(mode="after")
    def _check(self) -> SourceConfig:
        if self.kind != "world" and not self.path:
            raise ValueError(f"a {self.kind!r} source needs a path")
        if self.weight <= 0:
            raise ValueError(f"weight must be positive, got {self.weight}")
        if not self.caption_columns:
            raise ValueError("caption_columns must name at least one column")
        if not self.shuffle and self.resampled:
            raise ValueError("shuffle: false and resampled: true contradict each other (resampled draws at random)")
        if self.shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {self.shuffle_buffer}")
        return self


class CitConfig(Section):
    """CiT (Xu et al. 2023): curation in training. Each step draws ``batch_size / keep`` samples and
    trains on the ``batch_size`` whose caption embedding (under the model being trained) is
    closest to one of the target task's class names (in the templates, embeddings averaged)."""

    class_names: list[str] = []
    classes_file: str | None = None  # one class name per line, added to class_names
    templates: list[str] = ["a photo of a {}."]
    keep: float = 0.5  # the share of the drawn samples that is trained on

    @model_validator(mode="after")
    def _check(self) -> CitConfig:
        if not 0.0 < self.keep <= 1.0:
            raise ValueError(f"keep must be in (0, 1], got {self.keep}")
        if not self.class_names and not self.classes_file:
            raise ValueError("needs class_names or classes_file")
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ValueError("templates must each contain {} (the class name)")
        return self


class DataConfig(Section):
    sources: list[SourceConfig] = [SourceConfig()]
    num_workers: int = 1
    # How images enter the model (OpenCLIP's resize modes): "shortest" side + centre crop,
    # "longest" side + pad, or "squash". Training adds a random-resized crop when random_crop is set.
    resize_mode: Literal["shortest", "longest", "squash"] = "shortest"
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"  # of every resize (OpenCLIP's default: bicubic)
    random_crop: bool = False
    crop_scale: tuple[float, float] = (0.9, 1.0)
    max_image_pixels: int = 100_000_000  # larger images are skipped unread (decompression-bomb guard)
    # Hard-negative captions added to each batch (NegCLIP / FiGCLIP): rules from
    # vislang.data.negatives, one applicable rule drawn per caption. Contrastive objectives only.
    hard_negatives: list[Literal["relation", "attribute", "noun", "shuffle", "verb"]] = []
    world: WorldConfig = WorldConfig()
    cit: CitConfig | None = None  # curation in training (CiT); contrastive objectives only

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if not self.sources:
            raise ValueError("data.sources must list at least one source")
        return self


class TokenizerConfig(Section):
    # "trained": a byte-level BPE trained on the training captions (vocab_size, train_texts,
    # lowercase), or the saved tokenizer.json at path. "openai": OpenAI CLIP's BPE (49408 ids,
    # the ids of OpenAI's and OpenCLIP's tokenizer) from its merges file at path
    # (bpe_simple_vocab_16e6.txt.gz, e.g. from the open_clip package); context_length 77 as CLIP.
    kind: Literal["trained", "openai"] = "trained"
    path: str | None = None
    vocab_size: int = 512
    train_texts: int = 20000
    lowercase: bool = True

    @model_validator(mode="after")
    def _check(self) -> TokenizerConfig:
        if self.kind == "openai" and not self.path:
            raise ValueError("an openai tokenizer needs path: OpenAI CLIP's merges file (bpe_simple_vocab_16e6.txt.gz)")
        return self


class LossConfig(Section):
    label_smoothing: float = 0.0  # softmax contrastive only (ALIGN uses 0.1)
    # NegCLIP's hard-negative images: a bank of this many recent pairs; each image's nearest
    # bank neighbour joins the batch with its caption (0 = off). Contrastive objectives only.
    hard_negative_images: int = 0
    # CapPa: share of examples decoded in parallel from all-[MASK] inputs (big_vision's
    # masked_pred_prob); the objective "cap" is the same model with 0.
    parallel_prob: float = 0.75
    # CoCa: loss = contrastive_weight * contrastive + caption_weight * captioning.
    contrastive_weight: float = 1.0
    caption_weight: float = 2.0
    # SigLIP across ranks: pass text blocks around the ranks (B x B logits at a time) instead of
    # gathering every rank's texts (B x world*B).
    siglip_ring: bool = False
    # SigLIP: compute the logits this many texts at a time and recompute them in the backward
    # pass, so the loss holds B x siglip_chunk logits instead of B x all texts (0 = off; exact).
    siglip_chunk: int = 0

    @model_validator(mode="after")
    def _check(self) -> LossConfig:
        if self.hard_negative_images < 0:
            raise ValueError(f"hard_negative_images must be >= 0, got {self.hard_negative_images}")
        if self.siglip_chunk < 0:
            raise ValueError(f"siglip_chunk must be >= 0, got {self.siglip_chunk}")
        if not 0.0 <= self.parallel_prob <= 1.0:
            raise ValueError(f"parallel_prob must be in [0, 1], got {self.parallel_prob}")
        return self


class ParamRule(Section):
    """A rule over the objective's parameter names (``model.vision.transformer.blocks.0.mlp.0.weight``,
    ...; ``re.search``). Rules apply in order and a later one overrides the fields it sets."""

    match: str
    freeze: bool | None = None  # True: no gradient, no update (LiT); False: trainable again
    lr_scale: float | None = None  # multiplies train.lr (and its schedule)
    weight_decay: float | None = None  # replaces train.weight_decay

    @field_validator("match")
    @classmethod
    def _regex(cls, value: str) -> str:
        import re

        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"not a regular expression: {error}") from None
        return value


class TrainConfig(Section):
    steps: int = 1250
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int = 50
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    seed: int = 0
    # Autocast precision; weights, optimizer state, logit scale and losses stay fp32. "fp16"
    # (CUDA only) adds a dynamic gradient scaler.
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # Micro-batches per step: the step's batch (train.batch_size per rank) is split in this many
    # parts that pass the model one at a time. CLIP and SigLIP accumulate exactly (GradCache: all
    # samples stay negatives of each other); captioners and CoCa accumulate plainly.
    accum_steps: int = 1
    compile: bool = False  # torch.compile the model's forward (Inductor needs a C++ compiler on CPU)
    # Under torchrun: shard every transformer block with FSDP2 instead of replicating the model
    # (DDP), for models whose weights + optimizer state do not fit one device.
    fsdp: bool = False
    # FLIP's unmasked tuning: the last fraction of the steps trains with model.vision.mask_ratio 0.
    unmasked_tuning: float = 0.0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...; under torchrun cuda means cuda:LOCAL_RANK
    threads: int = 0  # torch intra-op threads; 0 = all cores
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    eval_every: int = 250
    log_every: int = 25
    # Freezing, learning-rate and weight-decay multipliers by parameter name (after the towers'
    # lock shorthands): [{match: "^model\\.text\\.", lr_scale: 0.1}, ...]
    param_rules: list[ParamRule] = []

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        for name in (
            "steps",
            "batch_size",
            "accum_steps",
            "checkpoint_every",
            "eval_every",
            "log_every",
            "keep_checkpoints",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.unmasked_tuning <= 1.0:
            raise ValueError(f"train.unmasked_tuning must be in [0, 1], got {self.unmasked_tuning}")
        return self


class AroSetConfig(Section):
    """One ARO set on local files (see vislang.eval.aro for the formats)."""

    kind: Literal["vg_relation", "vg_attribution", "coco_order", "flickr30k_order"]
    annotations: str  # the set's JSON file
    images: str  # folder the JSON's image paths are relative to
    min_group: int = 25  # relations / attribute pairs with fewer items stay out of the macro average


class EvalConfig(Section):
    zeroshot: bool = True
    retrieval: bool = True
    compositional: bool = True
    n_classify: int = 1000  # test images per zero-shot task
    n_retrieval: int = 1000  # test image–caption pairs
    n_probe: int = 500  # items per compositional probe
    batch_size: int = 500
    aro: list[AroSetConfig] = []  # ARO sets on real images, evaluated beside the world's tasks
    # Retrieval on held-out data of any source kind (shards, tables, folders): the first
    # n_retrieval usable samples, one caption each; metrics under retrieval_<name>/...
    retrieval_sources: list[SourceConfig] = []


class RunConfig(Section):
    objective: str = "clip"
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    @field_validator("objective")
    @classmethod
    def _known_objective(cls, value: str) -> str:
        from vislang.objectives import OBJECTIVES

        if value not in OBJECTIVES:
            raise ValueError(f"unknown objective {value!r}; choose from {', '.join(sorted(OBJECTIVES))}")
        return value

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        if self.data.cit is not None and (self.objective not in ("clip", "siglip", "coca") or self.data.hard_negatives):
            raise ValueError("data.cit needs a contrastive objective (clip, siglip, coca) without data.hard_negatives")
        if self.data.hard_negatives and self.objective not in ("clip", "siglip"):
            raise ValueError(
                f"data.hard_negatives needs a contrastive objective (clip, siglip), not {self.objective!r}"
            )
        if self.objective == "siglip" and self.model.init_logit_bias is None:
            raise ValueError(
                "the siglip objective needs model.init_logit_bias (SigLIP: init_logit_scale 10, init_logit_bias -10)"
            )
        if self.model.text.pretrained and self.objective not in ("clip", "siglip"):
            raise ValueError(f"model.text.pretrained is a text tower for clip or siglip, not {self.objective!r}")
        if any(s.kind == "world" for s in self.eval.retrieval_sources):
            raise ValueError("eval.retrieval_sources: the world's retrieval set is eval.retrieval")
        if self.train.accum_steps > 1 and self.loss.hard_negative_images:
            raise ValueError("train.accum_steps > 1 does not work with loss.hard_negative_images (the bank)")
        if self.train.accum_steps > self.train.batch_size:
            raise ValueError(f"train.accum_steps ({self.train.accum_steps}) exceeds train.batch_size")
        return self


# -- loading ---------------------------------------------------------------------------------


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``tree[a][b][c] = value`` for ``key == "a.b.c"``, creating sections as needed."""
    *parents, leaf = key.split(".")
    node = tree
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parents[: i + 1])} is not a section")
        node = child
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.lr=1e-3"`` -> ``("train.lr", 0.001)``; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _expand_preset(raw: dict[str, Any]) -> dict[str, Any]:
    model = raw.get("model")
    if not isinstance(model, dict) or not model.get("preset"):
        return raw
    from vislang.models.presets import PRESETS

    name = model["preset"]
    if name not in PRESETS:
        raise ConfigError(f"model.preset: unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return {**raw, "model": _deep_merge(PRESETS[name], model)}


def _format_error(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "<root>"
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown config key '{key}'"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "value_error" or "input" not in first:
        return f"{source}: {key}: {message}"
    return f"{source}: {key}: {message} (got {first['input']!r})"


def build_config(raw: dict[str, Any], overrides: list[str] = (), source: str = "config") -> RunConfig:
    """Validate a raw mapping plus ``key=value`` overrides into a :class:`RunConfig`."""
    raw = copy.deepcopy(raw)
    for text in overrides:
        set_dotted(raw, *parse_override(text))
    raw = _expand_preset(raw)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format_error(error, source)) from None


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML file (or start from the defaults) and apply ``--set`` overrides."""
    raw: Any = {}
    source = "config"
    if path is not None:
        source = str(path)
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"cannot read config {path}: {str(error).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the config must be a mapping of sections, got {type(raw).__name__}")
    return build_config(raw, overrides, source)


def to_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
