"""The ``train`` and ``tokenizer`` sections: optimisation, schedule, scale options, checkpoints."""

from __future__ import annotations

import math
import re
from typing import Any, Literal

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


class Stage(Section):
    """A change of the model's input from optimizer step ``start_step`` on (CLIPA's low-then-high
    resolution, BiomedCLIP's patch dropout until the last epoch). Fields left unset keep the value
    of the stage before (the model section's before the first stage)."""

    start_step: int = Field(
        ge=1,
        description="steps done when the stage begins: the stage trains steps start_step+1 onwards (log numbering), "
        "and a checkpoint of step start_step or later holds the stage's model",
    )
    image_size: int | None = Field(
        None, gt=0, description="model.vision.image_size from here on: positions interpolated, data at this size"
    )
    mask_ratio: float | None = Field(
        None, ge=0, lt=1, allow_inf_nan=False, description="model.vision.mask_ratio (FLIP) from here on"
    )
    context_length: int | None = Field(
        None, ge=3, description="model.text.context_length from here on: text positions truncated or interpolated"
    )

    @model_validator(mode="after")
    def _sets_something(self) -> Stage:
        if self.image_size is None and self.mask_ratio is None and self.context_length is None:
            raise ValueError(
                f"the stage at start_step {self.start_step} changes nothing "
                "(set image_size, mask_ratio or context_length)"
            )
        return self


def stage_values(stages: list[Stage], step: int) -> dict[str, Any]:
    """The fields (image_size, mask_ratio, context_length) the stages in effect after ``step``
    steps set, each later stage overriding what it sets; {} before the first stage."""
    values: dict[str, Any] = {}
    for stage in stages:
        if stage.start_step <= step:
            values |= stage.model_dump(exclude={"start_step"}, exclude_none=True)
    return values


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
        description="FLIP: the last fraction of the steps trains with model.vision.mask_ratio 0 (a stage "
        "{start_step: N, mask_ratio: 0} says the same; the two are not combined)",
    )
    stages: list[Stage] = Field(
        [],
        description="changes of image size, FLIP mask ratio or context length during training, in order of "
        "start_step: [{start_step: 300, image_size: 48}] (CLIPA), [{start_step: 900, mask_ratio: 0}] (BiomedCLIP); "
        "see docs/resolution.md",
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
        self._check_stages()
        return self

    def _check_stages(self) -> None:
        starts = [stage.start_step for stage in self.stages]
        for i, (before, after) in enumerate(zip(starts, starts[1:])):
            if after <= before:
                raise ValueError(f"train.stages.{i + 1}.start_step {after} does not follow the stage before ({before})")
        if starts and starts[-1] >= self.steps:
            last = len(starts) - 1
            raise ValueError(f"train.stages.{last}.start_step {starts[-1]} is not before train.steps ({self.steps})")
        if self.unmasked_tuning and any(stage.mask_ratio is not None for stage in self.stages):
            raise ValueError("train.unmasked_tuning and a stage's mask_ratio both set the mask: use one of them")
        resized = any(stage.image_size or stage.context_length for stage in self.stages)
        for name, used in (("fsdp", self.fsdp), ("ema_decay", self.ema_decay is not None), ("l2_sp", self.l2_sp > 0)):
            if resized and used:
                raise ValueError(f"train.stages that resize the inputs do not combine with train.{name} yet")


class TokenizerConfig(Section):
    kind: Literal["trained", "openai", "regex"] = Field(
        "trained",
        description="trained: a byte-level BPE trained on the training captions, or the saved tokenizer.json at "
        "path; openai: OpenAI CLIP's BPE (49408 ids, OpenCLIP's ids) from its merges file at path; regex: "
        "domain phrases (phrases file and/or mined from the captions) one token each, a byte-level BPE for the rest",
    )
    path: str | None = Field(None, description="tokenizer.json (trained) or bpe_simple_vocab_16e6.txt.gz (openai)")
    vocab_size: int = Field(512, ge=16, description="trained: vocabulary size (special tokens included)")
    train_texts: int = Field(20000, ge=1, description="trained: captions the BPE is trained on")
    lowercase: bool = Field(True, description="trained, regex: lower-case texts before tokenising")
    phrases: str | None = Field(
        None, description="regex: a text file of domain phrases, one per line (# starts a comment line)"
    )
    mine_phrases: int = Field(
        0, ge=0, description="regex: phrases to learn from the training captions (frequent word runs), beside a file's"
    )
    min_phrase_count: int = Field(5, ge=2, description="regex: occurrences a mined phrase needs in the captions")
    max_phrase_words: int = Field(8, ge=2, description="regex: words a mined phrase may have at most")

    @model_validator(mode="after")
    def _check(self) -> TokenizerConfig:
        if self.kind == "openai" and not self.path:
            raise ValueError("an openai tokenizer needs path: OpenAI CLIP's merges file (bpe_simple_vocab_16e6.txt.gz)")
        if self.kind == "regex" and not self.path and not self.phrases and not self.mine_phrases:
            raise ValueError("a regex tokenizer needs phrases (a file) or mine_phrases > 0 (or path: a saved one)")
        if self.kind == "regex" and self.mine_phrases + 3 + 256 > self.vocab_size:
            raise ValueError(
                f"mine_phrases {self.mine_phrases} leaves too few of vocab_size {self.vocab_size} for the byte-level "
                "BPE (256 bytes and 3 specials)"
            )
        return self
