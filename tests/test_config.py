"""Config validation: unknown keys and wrong types name the key; overrides and presets apply."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import export_untrained
from vislang.errors import ConfigError
from vislang.experiment import RunConfig, build_config, explain, load_config, to_yaml
from vislang.objectives.contrastive import ClipConfig
from vislang.train.loop import train


def test_defaults_have_design_keys():
    cfg = RunConfig()
    for key in ("steps", "batch_size", "lr", "seed", "precision", "checkpoint_every", "eval_every"):
        assert hasattr(cfg.train, key)
    assert cfg.objective.kind == "clip"


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
        ("objective=nope", "objective: unknown objective kind 'nope'"),
        ("model.vision.width=131", "not divisible by heads"),
        ("train.steps=0", "train.steps: must be at least 1 (got 0)"),
        ("model.vision.heads=0", "model.vision.heads: must be greater than 0"),
        ("train.lr=nan", "train.lr: must be greater than 0"),
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
    with pytest.raises(ConfigError, match=r"bad.yaml: line 2, column 1"):
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
        build_config({"train": {"steps": 3}}, ["train.steps.x=1"])
    with pytest.raises(ConfigError, match="objective.x: the clip objective has no such field"):
        build_config({"objective": "clip"}, ["objective.x=1"])  # objective is a section now


def test_every_shipped_config_is_valid():
    configs = sorted((Path(__file__).parents[1] / "configs").rglob("*.yaml"))
    assert len(configs) >= 7
    for path in configs:
        load_config(path)  # raises ConfigError naming the key on any problem
        assert path.read_text().startswith("#"), f"{path} must start with its command and expected result"


@pytest.mark.parametrize(
    ("raw", "override", "needle"),
    [
        (
            {"objective": "clip", "model": {"decoder": {"depth": 2}}},
            None,
            "model.decoder: has moved to objective.decoder",
        ),
        (
            {"objective": {"kind": "clip", "decoder": {"depth": 2}}},
            None,
            "objective.decoder: the clip objective has no",
        ),
        (
            {"objective": "siglip", "model": {"init_logit_bias": -10}},
            "objective.caption_weight=2",
            "objective.caption_weight: the siglip objective has no such field",
        ),
        ({"objective": "cap"}, "objective.parallel_prob=0.5", "objective.parallel_prob: the cap objective has no"),
        ({"loss": {"label_smoothing": 0.1}}, None, "loss.label_smoothing: has moved to objective.label_smoothing"),
        ({"eval": {"n_probe": 10}}, None, "eval.n_probe: has moved to eval.tasks"),
        ({}, "eval.tasks=[{type: nope}]", "unknown evaluation task type 'nope'"),
        ({}, "eval.tasks=[{type: zeroshot}, {type: zeroshot}]", "two tasks would write the same metrics"),
    ],
)
def test_fields_the_objective_does_not_use_are_refused(raw, override, needle):
    with pytest.raises(ConfigError) as info:
        build_config(raw, [override] if override else [])
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_objective_sections_carry_their_fields():
    cfg = build_config({"objective": {"kind": "coca", "caption_weight": 3, "decoder": {"n_queries": 8}}})
    assert cfg.objective.caption_weight == 3 and cfg.objective.decoder.n_queries == 8
    assert build_config({}, ["objective=cappa", "objective.parallel_prob=0.5"]).objective.parallel_prob == 0.5
    assert build_config({}, ["objective.label_smoothing=0.1"]).objective.label_smoothing == 0.1
    assert RunConfig.model_validate(yaml.safe_load(to_yaml(cfg))) == cfg  # the checkpoint round trip


def test_base_configs_compose(tmp_path):
    (tmp_path / "a.yaml").write_text("objective: clip\ntrain: {steps: 10, lr: 0.01}\nmodel: {embed_dim: 32}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\ntrain: {steps: 20}\n")
    (tmp_path / "c.yaml").write_text("base: b.yaml\nobjective: {kind: cap, decoder: {depth: 1}}\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert (cfg.train.steps, cfg.train.lr, cfg.model.embed_dim) == (20, 0.01, 32)
    assert cfg.objective.kind == "cap" and cfg.objective.decoder.depth == 1
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(tmp_path / "loop.yaml")


def test_duplicate_yaml_keys_are_refused(tmp_path):
    (tmp_path / "dup.yaml").write_text("train: {steps: 3}\nmodel: {embed_dim: 8}\ntrain: {lr: 0.1}\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'train' \(line 3, column 1\)"):
        load_config(tmp_path / "dup.yaml")


def test_explain_prints_descriptions():
    text = explain("model.vision.mask_ratio")
    assert text.startswith("model.vision.mask_ratio: float = 0.0") and "FLIP" in text
    assert "[coca]" in explain("objective.decoder.n_queries")
    with pytest.raises(ConfigError, match="unknown config key"):
        explain("model.vision.nope")
    assert "(no description)" not in explain()


# templates name the user's own files: tests/test_finetune_recipes.py runs them on fixtures; the domain
# recipes need their own data (videos, a BERT folder, runs to start from): tests/test_domain_recipes.py
CONFIGS = sorted(
    p for p in (Path(__file__).parents[1] / "configs").rglob("*.yaml") if p.parent.name not in ("templates", "domain")
)
FEW_STEPS = [
    "train.steps=2",
    "train.batch_size=8",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "train.threads=1",
    "data.num_workers=0",
    "tokenizer.train_texts=500",
    "eval.batch_size=16",
    "eval.tasks=[{type: zeroshot, n: 16}, {type: retrieval, n: 16}, {type: compositional, n: 8}]",
]


@pytest.fixture(scope="module")
def cap_run(tmp_path_factory):
    """A two-step run of the study's Cap config: the tower the *_from_cap configs start from."""
    out = tmp_path_factory.mktemp("cap") / "run"
    train(load_config(Path(__file__).parents[1] / "configs" / "compositional" / "cap.yaml", FEW_STEPS), out, quiet=True)
    return out


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_trains_a_few_steps(path, cap_run, tmp_path):
    cfg = load_config(path, FEW_STEPS)
    if cfg.model.vision.init_from:  # the study's follow-ups start from the Cap run's tower
        cfg = load_config(path, FEW_STEPS + [f"model.vision.init_from={cap_run}"])
    if cfg.train.init_from:  # fine-tuning recipes start from a pretrained model: here an untrained one of its shape
        clip = cfg.model_copy(update={"objective": ClipConfig()})  # what they start from is a CLIP
        start = export_untrained(clip, ["a red circle", "a blue square", "a green star"] * 10, tmp_path / "start")
        cfg = load_config(path, FEW_STEPS + [f"train.init_from={start}"])
    if any(s.kind == "table" and not Path(s.path).exists() for s in cfg.data.sources):  # GIST's pairs
        pairs = _pairs_table(tmp_path / "pairs.parquet")
        sources = f"data.sources=[{{kind: table, path: '{pairs}', label_column: label}}]"
        cfg = load_config(path, FEW_STEPS + [f"train.init_from={cfg.train.init_from}", sources])
    metrics = train(cfg, tmp_path / "run", quiet=True)
    assert 0.0 <= metrics["zeroshot/shape/top1"] <= 1.0


def _pairs_table(path: Path) -> Path:
    """What `vislang gist summarize` writes, made up: image bytes, caption, label, class."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    images = []
    for i in range(24):
        buffer = io.BytesIO()
        Image.new("RGB", (32, 32), (40 * (i % 6), 200, 30)).save(buffer, format="PNG")
        images.append(buffer.getvalue())
    labels = [i % 6 for i in range(24)]
    captions = [f"a picture of shape {y}, number {i}" for i, y in enumerate(labels)]
    table = pa.table({"image": images, "caption": captions, "label": labels, "class": [str(y) for y in labels]})
    pq.write_table(table, path)
    return path
