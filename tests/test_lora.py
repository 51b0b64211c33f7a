"""LoRA fine-tuning (train.lora) through peft, as one config of the one loop: the adapter count
against its formula (Σ rank·(in + out) over the adapted Linears) and its share of the model,
nothing but the adapters moving, the merged export's embeddings against the adapter model's and
its weights against W + (alpha/rank)·B·A by hand, exact resume, and the one-line refusals."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

from vislang.checkpoint import load_checkpoint, read_safetensors
from vislang.data import build_sources
from vislang.errors import ConfigError
from vislang.experiment import build_config, build_objective
from vislang.export import export_model
from vislang.restore import load_objective
from vislang.train import loop
from vislang.train.distributed import Ranks
from vislang.train.init_from import init_tower_from
from vislang.train.lora import apply_lora
from vislang.train.setup import build_trainable

QUICK = ["eval.tasks=[]", "train.log_every=1", "train.lr=1e-2", "train.warmup_steps=1"]
DEFAULT_TARGET = re.compile(r"model\.(vision|text)\.transformer\.blocks\.\d+\.(attn\.(in_proj|out_proj)|mlp\.(0|2))")


def test_a_rank_8_run_trains_the_adapter_formula_and_under_5_percent(tiny_overrides, tmp_path):
    width, depth = 256, 2
    sizes = [
        f"model.{t}.{k}={v}"
        for t in ("vision", "text")
        for k, v in (("width", width), ("depth", depth), ("mlp_ratio", 4))
    ]
    cfg = build_config({}, tiny_overrides + QUICK + sizes + ["model.embed_dim=128", "train.lora={}"])
    plain = build_objective(cfg, 300, 0)
    linears = {n: m for n, m in plain.named_modules() if isinstance(m, nn.Linear) and DEFAULT_TARGET.fullmatch(n)}
    # per block: in_proj w->3w, out_proj w->w, fc1 w->4w, fc2 4w->w: r·(4w + 2w + 5w + 5w)
    assert sum(8 * (m.in_features + m.out_features) for m in linears.values()) == 8 * 16 * width * 2 * depth
    sources = build_sources(cfg.data, cfg.model.vision.image_size, cfg.train.seed)
    parts = build_trainable(cfg, tmp_path, sources, None, Ranks(), torch.device("cpu"))
    trainable = {n: p for n, p in parts.objective.named_parameters() if p.requires_grad}
    assert all(re.search(r"\.lora_[AB]\.default\.weight$", n) for n in trainable)
    assert {n.split(".lora_")[0] for n in trainable} == set(linears)
    count = sum(p.numel() for p in trainable.values())
    assert count == 8 * 16 * width * 2 * depth
    base = sum(p.numel() for p in plain.parameters())
    assert count / base < 0.05, f"{count} of {base}"
    in_optimizer = {id(p) for g in parts.optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in trainable.values()}
    note = next(line for line in parts.notes if line.startswith("LoRA"))
    assert f"{count:,} adapter parameters" in note and f"{100 * count / (base + count):.2f}%" in note


def _trained(tiny_overrides, tmp_path, monkeypatch, extra: list[str]):
    """Train a LoRA run of TINY; returns (config, the objective the loop ended with, its weights at the start)."""
    cfg = build_config({}, tiny_overrides + QUICK + ["train.steps=6", "train.checkpoint_every=6"] + extra)
    seen = {}
    real = loop.optimizer_step

    def recording(run, batch, step):
        if not seen:
            seen["start"] = {k: v.clone() for k, v in run.parts.objective.state_dict().items()}
        seen["objective"] = run.parts.objective
        return real(run, batch, step)

    monkeypatch.setattr(loop, "optimizer_step", recording)
    loop.train(cfg, tmp_path / "run", quiet=True)
    return cfg, seen["objective"].eval(), seen["start"]


def test_only_adapters_move_and_the_merged_export_embeds_like_the_adapter_model(tiny_overrides, tmp_path, monkeypatch):
    lora = 'train.lora={rank: 8, alpha: 4, targets: ["model\\\\.vision\\\\..*\\\\.attn\\\\.in_proj", "model\\\\.text\\\\..*mlp\\\\.0"]}'
    cfg, adapted, start = _trained(tiny_overrides, tmp_path, monkeypatch, [lora])
    after = adapted.state_dict()
    for name, tensor in start.items():
        if ".lora_" in name:
            continue
        assert torch.equal(after[name], tensor), f"{name} moved"
    assert any(not torch.equal(after[n], start[n]) for n in start if ".lora_B." in n)

    export_model(tmp_path / "run", tmp_path / "export")
    merged, tokenizer, merged_cfg = load_objective(tmp_path / "export")
    assert merged_cfg.train.lora is None
    assert json.loads((tmp_path / "export" / "config.json").read_text())["train"]["lora"] is None
    weights = read_safetensors(tmp_path / "export" / "model.safetensors")
    assert set(weights) == set(build_objective(merged_cfg, tokenizer.vocab_size, tokenizer.pad_id).state_dict())
    layer = "model.vision.transformer.blocks.0.attn.in_proj"
    a, b = after[f"{layer}.lora_A.default.weight"].double(), after[f"{layer}.lora_B.default.weight"].double()
    by_hand = after[f"{layer}.base_layer.weight"].double() + (4 / 8) * b @ a
    assert torch.allclose(weights[f"{layer}.weight"].double(), by_hand, atol=1e-6)
    assert not torch.allclose(weights[f"{layer}.weight"], after[f"{layer}.base_layer.weight"], atol=1e-6)

    torch.manual_seed(1)
    images = torch.randn(6, 3, 32, 32)
    tokens = tokenizer(["a red square", "a blue circle left of a green triangle", "two shapes"])
    reloaded, _, reloaded_cfg = load_objective(tmp_path / "run")  # the checkpoint itself, merged on loading
    assert reloaded_cfg.train.lora is None and not any(".lora_" in k for k in reloaded.state_dict())
    with torch.no_grad():
        want_image, want_text = adapted.image_features(images), adapted.text_features(tokens)
        for model in (merged, reloaded):
            assert torch.allclose(model.image_features(images), want_image, atol=1e-5, rtol=0)
            assert torch.allclose(model.text_features(tokens), want_text, atol=1e-5, rtol=0)


def test_resume_with_adapters_equals_the_uninterrupted_run(tiny_overrides, tmp_path, monkeypatch):
    cfg = build_config({}, tiny_overrides + QUICK + ["train.steps=8", "train.checkpoint_every=4",
                                                     "train.lora={dropout: 0.1}"])  # fmt: skip
    loop.train(cfg, tmp_path / "uninterrupted", quiet=True)
    real = loop.optimizer_step

    def stops_after_4(run, batch, step):
        if step == 5:
            raise RuntimeError("stopped")
        return real(run, batch, step)

    monkeypatch.setattr(loop, "optimizer_step", stops_after_4)
    with pytest.raises(RuntimeError, match="stopped"):
        loop.train(cfg, tmp_path / "stopped", quiet=True)
    monkeypatch.setattr(loop, "optimizer_step", real)
    assert load_checkpoint(tmp_path / "stopped")["step"] == 4
    loop.train(cfg, tmp_path / "stopped", resume=True, quiet=True)
    resumed, expected = load_checkpoint(tmp_path / "stopped"), load_checkpoint(tmp_path / "uninterrupted")
    assert resumed["step"] == expected["step"] == 8
    assert any(".lora_A." in k for k in expected["model"])
    assert set(resumed["model"]) == set(expected["model"])
    for name, tensor in expected["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name
    assert resumed["optimizer"]["state"].keys() == expected["optimizer"]["state"].keys()


@pytest.mark.parametrize(
    "targets, message",
    [
        (["model\\.vision\\.nothing"], "'model\\\\.vision\\\\.nothing' matches no Linear layer of the model"),
        (["model\\.vision\\.transformer", "model\\.text\\.proj"], "matches no Linear layer"),  # a non-Linear module
        (["model\\.vision\\.attn_pool\\.attn\\.in_proj"], "cross-attention input projection"),
    ],
)
def test_targets_the_model_cannot_adapt_are_one_line(tiny_overrides, targets, message):
    cfg = build_config({}, tiny_overrides + ["model.vision.pool=map", f"train.lora={{targets: {json.dumps(targets)}}}"])
    objective = build_objective(cfg, 300, 0)
    with pytest.raises(ConfigError) as error:
        apply_lora(objective, cfg.train.lora)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert str(error.value).startswith("train.lora.targets: ")


@pytest.mark.parametrize(
    "value, field",
    [
        ("{rank: 0}", "train.lora.rank"),
        ("{alpha: 0}", "train.lora.alpha"),
        ("{alpha: .nan}", "train.lora.alpha"),
        ("{dropout: 1}", "train.lora.dropout"),
        ("{dropout: -0.1}", "train.lora.dropout"),
        ("{targets: []}", "train.lora.targets"),
        ('{targets: ["("]}', "train.lora.targets"),
        ("{ranks: 8}", "train.lora.ranks"),
    ],
)
def test_lora_values_out_of_bounds_are_refused(tiny_overrides, value, field):
    with pytest.raises(ConfigError, match=re.escape(field)):
        build_config({}, tiny_overrides + [f"train.lora={value}"])


def test_the_default_targets_are_both_towers_attention_and_mlp(tiny_overrides):
    cfg = build_config({}, tiny_overrides + ["train.lora={}"])
    assert (cfg.train.lora.rank, cfg.train.lora.alpha, cfg.train.lora.dropout) == (8, 16, 0)
    objective = build_objective(cfg, 300, 0)
    apply_lora(objective, cfg.train.lora)
    adapted = sorted({n.split(".lora_")[0] for n, _ in objective.named_parameters() if ".lora_A." in n})
    assert adapted == sorted(
        f"model.{tower}.transformer.blocks.0.{layer}"
        for tower in ("vision", "text")
        for layer in ("attn.in_proj", "attn.out_proj", "mlp.0", "mlp.2")
    )


def test_a_lora_run_can_start_another_runs_tower(tiny_overrides, tmp_path):
    """init_from a LoRA run's checkpoint takes its merged weights (peft's key names never leak)."""
    cfg = build_config({}, tiny_overrides + QUICK + ["train.steps=2", "train.checkpoint_every=2", "train.lora={}"])
    loop.train(cfg, tmp_path / "lora", quiet=True)
    merged = load_objective(tmp_path / "lora")[0].model.vision.state_dict()
    later = build_config({}, tiny_overrides + QUICK + ["train.steps=1", f"model.vision.init_from={tmp_path / 'lora'}"])
    fresh = build_objective(later, 300, 0).model.vision
    copied, missing = init_tower_from(fresh, tmp_path / "lora", "model.vision.")
    assert copied == len(merged) and not missing
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in merged.items())
