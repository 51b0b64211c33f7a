"""The ``train`` and ``tokenizer`` sections: optimisation, schedule, scale options, checkpoints."""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from vislang.config.base import Section


class ParamRule(Section):
    """A rule over the objective's parameter names (``model.vision.transformer.blocks.0.mlp.0.weight``,
    ...; ``re.search``). Rules apply in order and a later one overrides the fields it sets."""

    match: str = Field(description="regular expression searched in each parameter name")
    freeze: bool | None = Field(None, description="true: no gradient, no update (LiT); false: trainable again")
    lr_scale: float | None = Field(
        None, ge=0, allow_inf_nan=False, description="multiplies train.lr (and its schedule)"
    )
    weight_decay: float | None = Field(None, ge=0, allow_inf_nan=False, description="replaces train.weight_decay")

    @field_validator("match")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"not a regular expression: {error}") from None
        return value


# The default adapted layers: in both towers' transformer blocks, self-attention's fused q/k/v
# input projection and its output projection (models/layers.py MultiheadAttention: in_proj,
# out_proj) and the MLP's two Linears (Mlp is an nn.Sequential: 0 is fc1, 2 is fc2).
LORA_TARGETS = (r"model\.(vision|text)\.transformer\.blocks\.\d+\.(attn\.(in_proj|out_proj)|mlp\.(0|2))",)


class LoraConfig(Section):
    """LoRA adapters (Hu et al., 2021) applied with ``peft``: each targeted Linear ``W`` becomes
    ``W + (alpha / rank) · B·A`` with ``A`` (rank x in) and ``B`` (out x rank) the only weights
    that train; ``vislang export`` folds ``B·A`` into ``W`` and writes a plain model."""

    rank: int = Field(8, ge=1, description="rank r of each adapter: r x (in + out) weights per adapted Linear")
    alpha: float = Field(
        16.0,
        gt=0,
        allow_inf_nan=False,
        description="the adapter's output is scaled by alpha / rank (peft's lora_alpha)",
    )
    dropout: float = Field(
        0.0, ge=0, lt=1, allow_inf_nan=False, description="dropout on the adapter's input while training"
    )
    targets: list[str] = Field(
        list(LORA_TARGETS),
        min_length=1,
        description="regular expressions, each matched whole (re.fullmatch) against the objective's module paths "
        "(model.vision.transformer.blocks.0.attn.in_proj, ...); every nn.Linear one matches gets an adapter and each "
        "must match one; default: self-attention in_proj/out_proj and MLP fc1/fc2 (mlp.0, mlp.2) of both towers",
    )

    @field_validator("targets")
    @classmethod
    def _regexes(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"{pattern!r} is not a regular expression: {error}") from None
        return value


class TrainConfig(Section):
    steps: int = Field(1250, ge=1, description="optimizer steps")
    batch_size: int = Field(128, ge=1, description="samples per step and rank (the global batch is ranks x this)")
    lr: float = Field(2e-3, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(
        0.1, ge=0, allow_inf_nan=False, description="AdamW weight decay (not on gains, biases, logit scale)"
    )
    betas: tuple[float, float] = Field((0.9, 0.98), description="AdamW betas, each in [0, 1)")
    eps: float = Field(1e-6, gt=0, allow_inf_nan=False, description="AdamW epsilon")
    warmup_steps: int = Field(50, ge=0, description="linear warmup steps before the cosine decay")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, allow_inf_nan=False, description="cosine decays to lr * min_lr_ratio")
    grad_clip: float = Field(
        1.0, ge=0, allow_inf_nan=False, description="max global gradient norm; 0 disables clipping"
    )
    seed: int = Field(0, ge=0, lt=2**63, description="seed of the weights, the data order and every random draw")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="autocast precision; weights, optimizer state, logit scale and losses stay fp32; fp16 (CUDA "
        "only) adds a dynamic gradient scaler",
    )
    accum_steps: int = Field(
        1,
        ge=1,
        description="micro-batches per step; CLIP and SigLIP accumulate exactly (GradCache), captioners and CoCa "
        "plainly",
    )
    compile: bool = Field(False, description="torch.compile the model's forward (Inductor needs a C++ compiler)")
    fsdp: bool = Field(
        False, description="under torchrun: shard every transformer block with FSDP2 instead of replicating (DDP)"
    )
    unmasked_tuning: float = Field(
        0.0,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="FLIP: the last fraction of the steps trains with model.vision.mask_ratio 0",
    )
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$",
        description="auto, cpu, cuda, cuda:1, ...; under torchrun cuda means cuda:LOCAL_RANK",
    )
    threads: int = Field(0, ge=0, description="torch intra-op threads; 0 = all cores")
    checkpoint_every: int = Field(250, ge=1, description="steps between checkpoints (and at the end)")
    keep_checkpoints: int = Field(2, ge=1, description="the newest checkpoints kept; older ones are deleted")
    eval_every: int = Field(250, ge=1, description="steps between evaluations for tasks without their own every")
    log_every: int = Field(25, ge=1, description="steps between log lines")
    param_rules: list[ParamRule] = Field(
        [],
        description="freezing, learning-rate and weight-decay multipliers by parameter name (after the towers' "
        'lock shorthands): [{match: "^model\\\\.text\\\\.", lr_scale: 0.1}, ...]',
    )
    layer_decay: float | None = Field(
        None,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="layer-wise learning-rate decay (BEiT): block i of a tower of depth D gets lr x decay^(D-i), "
        "its embeddings decay^(D+1), heads, final norms and the logit scale 1; multiplies the rules' lr_scale",
    )
    ema_decay: float | None = Field(
        None,
        gt=0,
        lt=1,
        allow_inf_nan=False,
        description="an exponential moving average of the trainable weights (e.g. 0.999), updated after every "
        "optimizer step; evaluation, vislang.load and export use it in place of the raw weights",
    )
    ema_start: int = Field(
        0, ge=0, description="with ema_decay: up to this step the average copies the weights, then it averages"
    )
    l2_sp: float = Field(
        0.0,
        ge=0,
        allow_inf_nan=False,
        description="L2-SP: adds l2_sp/2 x the squared distance of the trainable weights to their values at the "
        "start of training to the loss; 0 disables (weight_decay 0 makes it replace decay toward zero)",
    )

    init_from: str | None = Field(
        None,
        description="fine-tuning: start the whole objective from a vislang checkpoint, run directory or export "
        "(converted OpenCLIP / Hugging Face models included; an EMA run gives its average, a LoRA run its merged "
        "weights) and use its tokenizer; the model section must describe the same architecture. Tensors the "
        "source lacks (a new classification head) start fresh",
    )
    lora: LoraConfig | None = Field(
        None,
        description="LoRA adapters through peft (train.lora={} for the defaults): only the adapters train; "
        "checkpoints hold them, vislang.load and export merge them into plain weights",
    )

    @field_validator("lr")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value}")
        return value

    @field_validator("betas")
    @classmethod
    def _betas(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in value):  # nan fails every comparison
            raise ValueError(f"must each be in [0, 1), got {list(value)}")
        return value

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.accum_steps > self.batch_size:
            raise ValueError(f"train.accum_steps ({self.accum_steps}) exceeds train.batch_size")
        if self.ema_start and self.ema_decay is None:
            raise ValueError("train.ema_start is set but train.ema_decay is not: no average would be kept")
        return self


class TokenizerConfig(Section):
    kind: Literal["trained", "openai"] = Field(
        "trained",
        description="trained: a byte-level BPE trained on the training captions, or the saved tokenizer.json at "
        "path; openai: OpenAI CLIP's BPE (49408 ids, OpenCLIP's ids) from its merges file at path",
    )
    path: str | None = Field(None, description="tokenizer.json (trained) or bpe_simple_vocab_16e6.txt.gz (openai)")
    vocab_size: int = Field(512, ge=16, description="trained: vocabulary size (special tokens included)")
    train_texts: int = Field(20000, ge=1, description="trained: captions the BPE is trained on")
    lowercase: bool = Field(True, description="trained: lower-case texts before tokenising")

    @model_validator(mode="after")
    def _check(self) -> TokenizerConfig:
        if self.kind == "openai" and not self.path:
            raise ValueError("an openai tokenizer needs path: OpenAI CLIP's merges file (bpe_simple_vocab_16e6.txt.gz)")
        return self
