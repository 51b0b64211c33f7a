"""Parameter rules: LiT (a locked image tower, BatchNorm statistics included), partial locking
(the last blocks unlocked), learning-rate scales and weight decay by name, and rule errors; an
image tower started from another run's (``model.vision.init_from``)."""

from __future__ import annotations

import pytest
import torch

from vislang.checkpoint import load_checkpoint
from vislang.errors import CheckpointError, ConfigError
from vislang.experiment import build_config, build_objective
from vislang.train.loop import train
from vislang.train.optim import apply_param_rules, build_optimizer, param_rules


def initial_and_final(tmp_path, overrides: list[str]) -> tuple[dict, dict]:
    cfg = build_config({}, overrides + ["train.steps=3", "train.checkpoint_every=3", "train.eval_every=3"])
    train(cfg, tmp_path, quiet=True)
    torch.manual_seed(cfg.train.seed)  # the loop builds the model right after this seed
    final = load_checkpoint(tmp_path / "checkpoints" / "step_00000003.pt")["model"]
    vocab = final["model.text.token_embed.weight"].shape[0]
    initial = build_objective(cfg, vocab, 0).state_dict()
    return initial, final


def changed(initial: dict, final: dict, prefix: str) -> set[str]:
    return {k for k in initial if k.startswith(prefix) and not torch.equal(initial[k], final[k])}


def test_lit_locks_the_image_tower_and_its_batchnorm_statistics(tmp_path, tiny_overrides):
    initial, final = initial_and_final(tmp_path, tiny_overrides + ["model.vision.lock=true"])
    assert not changed(initial, final, "model.vision.")  # weights and BatchNorm running statistics
    assert any("running_mean" in k for k in initial if k.startswith("model.vision.stem"))
    assert changed(initial, final, "model.text.")
    assert "trainable" in (tmp_path / "log.txt").read_text()


def test_partial_lock_trains_the_last_blocks_and_the_head(tmp_path, tiny_overrides):
    overrides = tiny_overrides + ["model.vision.depth=3", "model.vision.lock=true", "model.vision.unlocked_blocks=1"]
    initial, final = initial_and_final(tmp_path, overrides)
    moved = changed(initial, final, "model.vision.")
    assert moved and all(
        k.startswith(("model.vision.transformer.blocks.2.", "model.vision.ln_post", "model.vision.proj")) for k in moved
    )
    assert any(k.startswith("model.vision.transformer.blocks.2.") for k in moved)
    assert any(k.startswith("model.vision.proj") for k in moved)


def test_learning_rate_scale_and_weight_decay_by_name(tiny_overrides):
    rules = "[{match: '^model\\.text\\.', lr_scale: 0.1}, {match: 'ln_', weight_decay: 0.5}]"
    cfg = build_config({}, tiny_overrides + [f"train.param_rules={rules}", "train.lr=1e-3"])
    objective = build_objective(cfg, 50, 0)
    optimizer = build_optimizer(objective, cfg.train, apply_param_rules(objective, param_rules(cfg.model, cfg.train)))
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    for name, param in objective.named_parameters():
        group = group_of[id(param)]
        assert group["lr"] == pytest.approx(1e-4 if name.startswith("model.text.") else 1e-3), name
        if "ln_" in name:
            assert group["weight_decay"] == 0.5
        elif param.ndim < 2:
            assert group["weight_decay"] == 0.0, name


def test_rule_errors_name_the_rule(tiny_overrides):
    cfg = build_config({}, tiny_overrides + ["train.param_rules=[{match: '^model\\.nothing\\.', freeze: true}]"])
    with pytest.raises(ConfigError, match="nothing.*matches no parameter"):
        apply_param_rules(build_objective(cfg, 50, 0), param_rules(cfg.model, cfg.train))
    with pytest.raises(ConfigError, match="match"):
        build_config({}, ["train.param_rules=[{match: '(unclosed'}]"])
    everything = build_config({}, tiny_overrides + ["train.param_rules=[{match: '.', freeze: true}]"])
    with pytest.raises(ConfigError, match="every parameter is frozen"):
        apply_param_rules(build_objective(everything, 50, 0), param_rules(everything.model, everything.train))


def test_image_tower_from_a_captioner_run_locked(tmp_path, tiny_overrides):
    """CapPa's LiT evaluation: a contrastive run on a captioner's image tower. The tower's tensors
    come from the captioner's last checkpoint; the projection (a captioner has none) starts fresh."""
    steps = ["train.steps=2", "train.checkpoint_every=2", "train.eval_every=2"]
    train(build_config({}, tiny_overrides + steps + ["objective=cap"]), tmp_path / "cap", quiet=True)
    source = load_checkpoint(tmp_path / "cap")["model"]
    overrides = [f"model.vision.init_from={tmp_path / 'cap'}", "model.vision.lock=true"]
    train(build_config({}, tiny_overrides + steps + overrides), tmp_path / "lit", quiet=True)
    final = load_checkpoint(tmp_path / "lit")["model"]
    tower = {k for k in final if k.startswith("model.vision.")}
    assert tower - set(source) == {"model.vision.proj.weight"}
    for key in tower & set(source):
        assert torch.equal(final[key], source[key]), key
    assert "fresh: proj.weight" in (tmp_path / "lit" / "log.txt").read_text()


def test_image_tower_init_errors_name_the_tensor(tmp_path, tiny_overrides):
    steps = ["train.steps=1", "train.checkpoint_every=1", "train.eval_every=1"]
    train(build_config({}, tiny_overrides + steps), tmp_path / "a", quiet=True)
    wider = tiny_overrides + steps + ["model.vision.width=48", f"model.vision.init_from={tmp_path / 'a'}"]
    with pytest.raises(CheckpointError, match=r"model\.vision\.\S+ has shape"):
        train(build_config({}, wider), tmp_path / "b", quiet=True)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(
            build_config({}, tiny_overrides + steps + [f"model.vision.init_from={tmp_path}"]),
            tmp_path / "c",
            quiet=True,
        )
