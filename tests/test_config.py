"""Config validation: unknown keys and wrong types name the key; overrides and presets apply."""

from __future__ import annotations

import pytest
import yaml

from vislang.config import RunConfig, build_config, load_config, to_yaml
from vislang.errors import ConfigError


def test_defaults_have_design_keys():
    cfg = RunConfig()
    for key in ("steps", "batch_size", "lr", "seed", "precision", "checkpoint_every", "eval_every"):
        assert hasattr(cfg.train, key)
    assert cfg.objective == "clip"


def test_override_types_are_read_as_yaml():
    cfg = build_config({}, ["train.lr=3e-4", "train.steps=7", "model.vision.pool=map", "train.betas=[0.9, 0.95]"])
    assert cfg.train.lr == pytest.approx(3e-4) and cfg.train.steps == 7
    assert cfg.model.vision.pool == "map" and cfg.train.betas == (0.9, 0.95)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.stepz=5", "unknown config key 'train.stepz'"),
        ("modle.embed_dim=5", "unknown config key 'modle'"),
        ("train.steps=abc", "train.steps"),
        ("train.steps=1.5", "train.steps"),
        ("model.vision.pool=max", "model.vision.pool"),
        ("train.precision=fp8", "train.precision"),
        ("objective=nope", "unknown objective 'nope'"),
        ("model.vision.width=131", "not divisible by heads"),
        ("train.steps=0", "train.steps must be at least 1"),
    ],
)
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(ConfigError) as info:
        build_config({}, [override])
    message = str(info.value)
    assert needle in message and "\n" not in message


def test_siglip_requires_bias():
    with pytest.raises(ConfigError, match="init_logit_bias"):
        build_config({"objective": "siglip"})
    cfg = build_config({"objective": "siglip", "model": {"init_logit_scale": 10, "init_logit_bias": -10}})
    assert cfg.model.init_logit_bias == -10


def test_yaml_file_round_trip(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("objective: clip\ntrain:\n  steps: 33\n")
    cfg = load_config(path, ["train.lr=0.01"])
    assert cfg.train.steps == 33 and cfg.train.lr == 0.01
    again = build_config(yaml.safe_load(to_yaml(cfg)))
    assert again == cfg


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "bad.yaml")


def test_presets_expand_and_fields_override():
    cfg = build_config({"model": {"preset": "ViT-B-16", "vision": {"depth": 2}}})
    assert cfg.model.vision.patch_size == 16 and cfg.model.vision.width == 768
    assert cfg.model.vision.depth == 2 and cfg.model.text.context_length == 77
    with pytest.raises(ConfigError, match="unknown preset"):
        build_config({}, ["model.preset=ViT-Q-99"])


def test_set_needs_key_value():
    with pytest.raises(ConfigError, match="key=value"):
        build_config({}, ["train.steps"])
    with pytest.raises(ConfigError, match="not a section"):
        build_config({"objective": "clip"}, ["objective.x=1"])


def test_every_shipped_config_is_valid():
    from pathlib import Path

    from vislang.config import load_config

    configs = sorted((Path(__file__).parents[1] / "configs").rglob("*.yaml"))
    assert len(configs) >= 7
    for path in configs:
        load_config(path)  # raises ConfigError naming the key on any problem
        assert path.read_text().startswith("#"), f"{path} must start with its command and expected result"
