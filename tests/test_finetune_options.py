"""Fine-tuning options of the one loop, each against its direct formula: the EMA of the weights
(e_s = θ_s up to ema_start, then decay·e_{s-1} + (1-decay)·θ_s), what evaluation, loading and
export see with it, the learning rate of every block under layer-wise decay (BEiT: block i of
D gets decay^(D-i), embeddings decay^(D+1), the rest 1, times the rules' lr_scale), the L2-SP
penalty (l2_sp/2·Σ||θ-θ₀||², gradient l2_sp·(θ-θ₀)), and exact resume with all three on."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

from conftest import export_untrained
from vislang.checkpoint import load_checkpoint, read_safetensors
from vislang.data import build_sources
from vislang.errors import ConfigError
from vislang.experiment import build_config
from vislang.export import export_model
from vislang.restore import load_objective
from vislang.train import loop
from vislang.train.distributed import Ranks
from vislang.train.ema import WeightEMA
from vislang.train.optim import apply_layer_decay, lr_factor
from vislang.train.regularizers import L2SP
from vislang.train.setup import build_trainable

QUICK = ["eval.tasks=[]", "train.log_every=1"]


def _trainable(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}


def _record_steps(monkeypatch) -> list[dict[str, torch.Tensor]]:
    """The trainable weights before the first step and after every optimizer step of a run."""
    seen: list[dict[str, torch.Tensor]] = []
    real = loop.optimizer_step

    def recording(run, batch, step):
        if not seen:
            seen.append(_trainable(run.parts.objective))
        out = real(run, batch, step)
        seen.append(_trainable(run.parts.objective))
        return out

    monkeypatch.setattr(loop, "optimizer_step", recording)
    return seen


def _ema_by_hand(raw: list[dict[str, torch.Tensor]], decay: float, start: int) -> dict[str, torch.Tensor]:
    average = {k: v.double() for k, v in raw[0].items()}
    for s in range(1, len(raw)):
        for k, v in raw[s].items():
            average[k] = v.double() if s <= start else decay * average[k] + (1 - decay) * v.double()
    return average


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.ema_decay=1", "train.ema_decay"),
        ("train.ema_decay=0", "train.ema_decay"),
        ("train.ema_decay=.nan", "train.ema_decay"),
        ("train.ema_start=-1", "train.ema_start"),
        ("train.ema_start=5", "ema_start is set but train.ema_decay is not"),
        ("train.layer_decay=0", "train.layer_decay"),
        ("train.layer_decay=1.01", "train.layer_decay"),
        ("train.layer_decay=.inf", "train.layer_decay"),
        ("train.l2_sp=-0.1", "train.l2_sp"),
        ("train.l2_sp=.nan", "train.l2_sp"),
    ],
)
def test_the_options_refuse_values_out_of_bounds(tiny_overrides, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_config({}, tiny_overrides + [override])


def test_the_options_accept_their_bounds(tiny_overrides):
    cfg = build_config({}, tiny_overrides + ["train.ema_decay=0.999", "train.ema_start=3", "train.layer_decay=1",
                                             "train.l2_sp=0"])  # fmt: skip
    assert (cfg.train.ema_decay, cfg.train.ema_start, cfg.train.layer_decay, cfg.train.l2_sp) == (0.999, 3, 1, 0)
    default = build_config({}, tiny_overrides).train
    assert (default.ema_decay, default.ema_start, default.layer_decay, default.l2_sp) == (None, 0, None, 0)


def test_ema_follows_the_formula_and_swaps_in_and_out_exactly():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    module[2].bias.requires_grad_(False)
    frozen, buffers = module[2].bias.detach().clone(), module[1].running_mean
    ema = WeightEMA(module, decay=0.7, start=2)
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.5)
    raw = [_trainable(module)]
    for step in range(1, 7):
        optimizer.zero_grad()
        module(torch.randn(8, 4)).square().mean().backward()
        optimizer.step()
        ema.update(step)
        raw.append(_trainable(module))
    expected = _ema_by_hand(raw, 0.7, 2)
    assert ema.names == list(expected) and "2.bias" not in ema.names
    for name, value in ema.state_dict().items():
        assert torch.allclose(value.double(), expected[name], atol=1e-6), name
    assert not torch.allclose(ema.state_dict()["2.weight"], raw[-1]["2.weight"])  # it does average
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with ema.applied():
        for name, p in module.named_parameters():
            assert torch.equal(p, ema.state_dict()[name] if name in ema.names else before[name]), name
    for name, value in module.state_dict().items():
        assert torch.equal(value, before[name]), name  # raw weights, buffers, frozen ones: bit for bit
    assert torch.equal(module[2].bias, frozen) and module[1].running_mean is buffers


def test_ema_of_a_run_is_the_formula_and_what_evaluation_loading_and_export_see(tiny_overrides, tmp_path, monkeypatch):
    raw = _record_steps(monkeypatch)
    evaluated: list[dict[str, torch.Tensor]] = []
    real_evaluate = loop.evaluate

    def recording_evaluate(objective, evaluators, *args, **kwargs):
        evaluated.append(_trainable(objective))
        return real_evaluate(objective, evaluators, *args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", recording_evaluate)
    cfg = build_config({}, tiny_overrides + ["train.steps=6", "train.eval_every=3", "train.checkpoint_every=3",
                                             "train.keep_checkpoints=5", "eval.tasks=[{type: zeroshot, n: 20}]",
                                             "train.ema_decay=0.8", "train.ema_start=2"])  # fmt: skip
    run = tmp_path / "run"
    loop.train(cfg, run, quiet=True)
    assert len(raw) == 7
    at_3, at_6 = load_checkpoint(run / "checkpoints" / "step_00000003.pt"), load_checkpoint(run)
    for checkpoint, steps in ((at_3, 3), (at_6, 6)):
        expected = _ema_by_hand(raw[: steps + 1], 0.8, 2)
        assert set(checkpoint["ema"]) == set(expected)
        for name, value in checkpoint["ema"].items():
            assert torch.allclose(value.double(), expected[name], atol=1e-6), name
        assert torch.equal(checkpoint["model"]["model.logit_scale"], raw[steps]["model.logit_scale"])  # raw kept
    assert len(evaluated) == 2
    for seen, checkpoint in zip(evaluated, (at_3, at_6)):
        assert all(torch.equal(seen[k], checkpoint["ema"][k]) for k in seen)
        assert any(not torch.equal(seen[k], checkpoint["model"][k]) for k in seen)
    objective, _, _ = load_objective(run)
    for name, value in objective.state_dict().items():
        assert torch.equal(value, at_6["ema"].get(name, at_6["model"][name])), name
    exported = read_safetensors(export_model(run, tmp_path / "export") / "model.safetensors")
    assert all(torch.equal(exported[k], v) for k, v in at_6["ema"].items())


def test_the_learning_rate_of_each_block_is_lr_times_decay_to_its_depth(tiny_overrides, tmp_path):
    decay, depth = 0.6, {"vision": 3, "text": 2}
    cfg = build_config({}, tiny_overrides + QUICK + [
        "model.vision.depth=3", "model.text.depth=2", "model.vision.pool=map", "train.layer_decay=0.6",
        'train.param_rules=[{match: "^model\\\\.text\\\\.", lr_scale: 0.1},'
        ' {match: "^model\\\\.vision\\\\.transformer\\\\.blocks\\\\.0\\\\.", freeze: true}]',
    ])  # fmt: skip
    sources = build_sources(cfg.data, cfg.model.vision.image_size, cfg.train.seed)
    parts = build_trainable(cfg, tmp_path, sources, None, Ranks(), torch.device("cpu"))
    names = {id(p): n for n, p in parts.objective.named_parameters()}
    block = re.compile(r"^model\.(vision|text)\.transformer\.blocks\.(\d+)\.")
    embedding = re.compile(r"^model\.(vision\.(stem|pos_embed|cls_token|ln_pre)|text\.(token_embed|pos_embed))")
    checked = set()
    for group in parts.optimizer.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            tower = name.split(".")[1]
            if m := block.match(name):
                power = depth[m.group(1)] - int(m.group(2))
            elif embedding.match(name):
                power = depth[tower] + 1
            else:
                power = 0  # final norms, attention pool, projections, logit scale
            expected = cfg.train.lr * (0.1 if tower == "text" else 1.0) * decay**power
            assert group["initial_lr"] == pytest.approx(expected, rel=1e-12), name
            assert group["lr"] == pytest.approx(expected * lr_factor(0, 2, cfg.train.steps), rel=1e-12), name
            checked.add(name)
    trainable = {n for n, p in parts.objective.named_parameters() if p.requires_grad}
    assert checked == trainable and not any(n.startswith("model.vision.transformer.blocks.0.") for n in checked)
    assert {"model.vision.transformer.blocks.2.mlp.0.weight", "model.vision.attn_pool.query"} <= checked
    assert any("layer decay 0.6" in note for note in parts.notes)


def test_layer_decay_needs_a_tower_with_blocks():
    with pytest.raises(ConfigError, match="train.layer_decay"):
        apply_layer_decay(nn.Linear(2, 2), {"weight": {"lr_scale": 1.0}}, 0.5)


def test_the_gradient_of_l2_sp_is_strength_times_the_distance_to_the_start():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(5, 4), nn.LayerNorm(4), nn.Linear(4, 3))
    module[0].bias.requires_grad_(False)
    start = {n: p.detach().clone() for n, p in module.named_parameters()}
    penalty = L2SP(module, strength=0.3)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p))
    value = penalty()
    value.backward()
    by_hand = 0.15 * sum((p.detach().double() - start[n].double()).square().sum() for n, p in module.named_parameters()
                         if p.requires_grad)  # fmt: skip
    assert value.item() == pytest.approx(by_hand.item(), rel=1e-6)
    for name, p in module.named_parameters():
        if p.requires_grad:  # biases and norm gains included
            assert torch.allclose(p.grad, 0.3 * (p.detach() - start[name]), atol=1e-6), name
        else:
            assert p.grad is None and name not in penalty.names


def test_the_loop_adds_the_l2_sp_gradient_to_the_data_gradient(tiny_overrides, tmp_path, monkeypatch):
    data_grads, total_grads, weights = [], [], []
    real_backward, real_clip = loop.backward, loop.clip_gradients

    def recording_backward(objective, *args, **kwargs):
        parts = real_backward(objective, *args, **kwargs)
        data_grads.append({n: p.grad.clone() for n, p in objective.named_parameters() if p.grad is not None})
        return parts

    def recording_clip(module, max_norm):
        total_grads.append({n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None})
        weights.append(_trainable(module))
        return real_clip(module, max_norm)

    monkeypatch.setattr(loop, "backward", recording_backward)
    monkeypatch.setattr(loop, "clip_gradients", recording_clip)
    cfg = build_config({}, tiny_overrides + QUICK + ["train.steps=3", "train.l2_sp=2.0"])
    loop.train(cfg, tmp_path / "run", quiet=True)
    start = load_checkpoint(tmp_path / "run")["regularizers"]["l2_sp"]
    assert len(total_grads) == 3
    for data, total, theta in zip(data_grads[1:], total_grads[1:], weights[1:]):
        assert set(total) == set(start)
        for name in start:
            assert torch.allclose(total[name] - data[name], 2.0 * (theta[name] - start[name]), atol=1e-6), name
        assert any((theta[n] != start[n]).any() for n in start)


def test_resume_with_ema_layer_decay_and_l2_sp_equals_the_uninterrupted_run(tiny_overrides, tmp_path, monkeypatch):
    base = build_config({}, tiny_overrides + QUICK)
    torch.manual_seed(123)  # starting weights unlike the seed's, so the anchor must come from the checkpoint
    start = export_untrained(base, ["a red square", "a blue circle"] * 20, tmp_path / "start")
    cfg = build_config({}, tiny_overrides + QUICK + [
        "train.steps=8", "train.checkpoint_every=4", f"model.vision.init_from={start}", "train.ema_decay=0.7",
        "train.ema_start=2", "train.l2_sp=0.5", "train.layer_decay=0.8",
    ])  # fmt: skip
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
    for key in ("model", "ema"):
        assert set(resumed[key]) == set(expected[key])
        for name, tensor in expected[key].items():
            assert torch.equal(resumed[key][name], tensor), f"{key} {name}"
    anchors = expected["regularizers"]["l2_sp"]
    assert all(torch.equal(resumed["regularizers"]["l2_sp"][k], v) for k, v in anchors.items())
    initial = read_safetensors(tmp_path / "start" / "model.safetensors")
    assert torch.equal(anchors["model.vision.proj.weight"], initial["model.vision.proj.weight"])  # θ₀ = init_from
    records = [json.loads(line) for line in (tmp_path / "uninterrupted" / "metrics.jsonl").read_text().splitlines()]
    for r in (r for r in records if "train/loss" in r):
        assert r["train/l2_sp"] > 0 or r["step"] == 1
        assert r["train/loss"] == pytest.approx(r["train/contrastive"] + r["train/l2_sp"], rel=1e-5)
