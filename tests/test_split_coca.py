"""CoCa's decoder split from a trained lm run (CONCH): which lm block went where, what stayed
fresh, the checks that refuse a source that does not fit, and a tiny training through the loop."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import TINY
from vislang.checkpoint import read_model
from vislang.errors import ConfigError
from vislang.experiment import build_config, build_objective, load_config
from vislang.models.text.decoder import TextDecoder, load_split, split_lm_state
from vislang.objectives.base import StartContext
from vislang.objectives.coca import CocaObjective
from vislang.tokenizers import BPETokenizer
from vislang.train.loop import train

FEW_STEPS = ["train.steps=3", "train.eval_every=3", "train.checkpoint_every=3"]
BLOCK_PARTS = ("ln_1", "attn", "ln_2", "mlp")


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm")
    train(build_config({}, TINY + FEW_STEPS + ["eval.tasks=[]", "objective=lm", "objective.depth=3"]), out, quiet=True)
    return out


def coca_overrides(lm_run, decoder_depth: int = 2) -> list[str]:
    return TINY + [
        "objective=coca",
        "objective.decoder.n_queries=4",
        f"objective.decoder.depth={decoder_depth}",
        f"objective.decoder.split_from={lm_run}",
        f"tokenizer.path={lm_run / 'tokenizer.json'}",
    ]


def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_split_maps_each_block(tmp_path):
    torch.manual_seed(0)
    lm = TextDecoder(50, 8, 16, 2, 2.0, 5, 0)
    coca = TextDecoder(50, 8, 16, 2, 2.0, 2, 3, cls_token=True)
    before = {k: v.clone() for k, v in coca.state_dict().items()}
    loaded = load_split(coca, lm.state_dict())
    assert set(loaded) == set(split_lm_state(lm.state_dict(), 2, 3))
    for i in range(2):
        assert same(coca.unimodal[i], lm.unimodal[i])
    for j in range(3):
        block, source = coca.multimodal[j], lm.unimodal[2 + j]
        assert all(same(getattr(block, part), getattr(source, part)) for part in BLOCK_PARTS)
        for part in ("ln_cross", "cross_attn"):  # no source: left as initialised
            fresh = getattr(block, part).state_dict()
            assert all(torch.equal(v, before[f"multimodal.{j}.{part}.{k}"]) for k, v in fresh.items())
        assert not torch.equal(block.cross_attn.in_proj.weight, source.attn.in_proj.weight)
    for name in ("token_embed", "ln_final", "head"):
        assert same(getattr(coca, name), getattr(lm, name))
    assert torch.equal(coca.pos_embed, lm.pos_embed)
    assert torch.equal(coca.cls_embed, before["cls_embed"]) and torch.equal(coca.ln_cls.weight, before["ln_cls.weight"])


def test_split_refuses_depths_that_do_not_add_up():
    lm = TextDecoder(50, 8, 16, 2, 2.0, 4, 0).state_dict()
    with pytest.raises(ValueError, match="the lm has 4 blocks.*add up to 5"):
        split_lm_state(lm, 2, 3)
    with pytest.raises(ValueError, match="multimodal blocks"):
        split_lm_state(TextDecoder(50, 8, 16, 2, 2.0, 1, 1).state_dict(), 1, 1)
    wide = TextDecoder(50, 8, 32, 2, 2.0, 3, 0).state_dict()
    with pytest.raises(ValueError, match="has shape"):
        load_split(TextDecoder(50, 8, 16, 2, 2.0, 1, 2, cls_token=True), wide)


def start(cfg, tokenizer) -> tuple[CocaObjective, list[str]]:
    objective = build_objective(cfg, tokenizer.vocab_size, tokenizer.pad_id)
    return objective, objective.start(StartContext(tokenizer, torch.device("cpu")))


def test_split_from_an_lm_run_and_its_checks(lm_run, tmp_path):
    tokenizer = BPETokenizer.load(lm_run / "tokenizer.json", 24)
    objective, lines = start(build_config({}, coca_overrides(lm_run)), tokenizer)
    assert "lm blocks 0-0 -> unimodal, 1-2 -> multimodal" in lines[0]
    saved = read_model(lm_run)["model"]
    decoder = objective.model.decoder
    for name, value in decoder.multimodal[1].mlp.state_dict().items():
        assert torch.equal(value, saved[f"model.unimodal.2.mlp.{name}"])
    with pytest.raises(ConfigError, match="the lm has 3 blocks") as error:
        start(build_config({}, coca_overrides(lm_run, decoder_depth=1)), tokenizer)
    assert "\n" not in str(error.value) and str(lm_run) in str(error.value)
    with pytest.raises(ConfigError, match="model.text.heads is 2 there, 4 here"):
        start(build_config({}, coca_overrides(lm_run) + ["model.text.heads=4"]), tokenizer)
    other = BPETokenizer.train(["another corpus entirely", "of words"] * 20, 300, 24)
    with pytest.raises(ConfigError, match="tokenizer is not the lm's"):
        start(build_config({}, coca_overrides(lm_run)), other)


def test_split_coca_trains_through_the_loop(lm_run, tmp_path):
    overrides = coca_overrides(lm_run) + FEW_STEPS + ["eval.tasks=[{type: zeroshot, n: 20}]"]
    metrics = train(build_config({}, overrides), tmp_path / "run", quiet=True)
    log = (tmp_path / "run" / "log.txt").read_text()
    assert f"decoder split from {lm_run}" in log and 0.0 <= metrics["zeroshot/shape/top1"] <= 1.0


def test_shipped_conch_configs_chain(tmp_path):
    """configs/domain/conch_*.yaml, two steps each: mae -> lm -> CoCa from both, paths redirected."""
    configs = Path(__file__).parents[1] / "configs" / "domain"
    few = ["train.steps=2", "train.batch_size=8", "train.checkpoint_every=2", "train.eval_every=2"]
    few += ["data.num_workers=0", "tokenizer.train_texts=500", "eval.batch_size=16"]
    for stage in ("mae", "lm"):
        train(load_config(configs / f"conch_{stage}.yaml", few), tmp_path / stage, quiet=True)
    redirected = [
        f"model.vision.init_from={tmp_path / 'mae'}",
        f"objective.decoder.split_from={tmp_path / 'lm'}",
        f"tokenizer.path={tmp_path / 'lm' / 'tokenizer.json'}",
        "eval.tasks=[{type: zeroshot, n: 16}]",
    ]
    metrics = train(load_config(configs / "conch_coca.yaml", few + redirected), tmp_path / "coca", quiet=True)
    log = (tmp_path / "coca" / "log.txt").read_text()
    assert "lm blocks 0-1 -> unimodal, 2-3 -> multimodal" in log and "image tower: " in log
    assert 0.0 <= metrics["zeroshot/shape/top1"] <= 1.0
