"""CiT (curation in training): the selection rule on a model with known embeddings, a tiny run
on the world that draws twice its batch and trains on half, and the config checks."""

from __future__ import annotations

import json

import pytest
import torch

from vislang.config import CitConfig
from vislang.data.cit import CitCurator
from vislang.errors import ConfigError
from vislang.experiment import build_config
from vislang.train.loop import train


class FirstTokenModel(torch.nn.Module):
    """encode_text = a fixed vector per first token id (so similarities are known)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table[tokens[:, 0]]


def test_curator_keeps_the_captions_closest_to_a_class():
    words = {"circle": 0, "square": 1, "dog": 2, "tree": 3, "a photo of a circle.": 0, "a photo of a square.": 1}
    tokenizer = lambda texts: torch.tensor([[words[t], 9] for t in texts])  # noqa: E731
    table = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0.6, 0, 0.8], [0, 0.28, 0.96]])
    table = torch.cat([table, torch.zeros(6, 3)])
    cfg = CitConfig(class_names=["circle", "square"], keep=0.5)
    curator = CitCurator(cfg, tokenizer, batch_size=3)
    batch = {"text": tokenizer(["tree", "circle", "dog", "square", "tree", "dog"]), "image": torch.arange(6)}
    scores = curator.scores(FirstTokenModel(table), batch["text"])
    assert scores.tolist() == pytest.approx([0.28, 1.0, 0.6, 1.0, 0.28, 0.6])
    kept = curator(FirstTokenModel(table), batch)
    assert kept["image"].tolist() == [1, 2, 3]  # the three best (ties broken by position), in drawn order
    assert kept["text"][:, 0].tolist() == [0, 2, 1]


def test_cit_trains_on_a_share_of_what_it_draws(tmp_path, tiny_overrides):
    overrides = tiny_overrides + [
        "train.steps=4",
        "train.log_every=4",
        "train.eval_every=4",
        "train.checkpoint_every=4",
    ]
    cfg = build_config({"data": {"cit": {"class_names": ["circle", "square"], "keep": 0.25}}}, overrides)
    train(cfg, tmp_path, quiet=True)
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    final = next(r for r in logged if "data/cit/drawn" in r)
    assert final["data/cit/drawn"] == 4 * 64 and final["data/cit/kept"] == 4 * 16


def test_cit_config_checks(tiny_overrides):
    with pytest.raises(ConfigError, match="class_names"):
        build_config({"data": {"cit": {"keep": 0.5}}}, tiny_overrides)
    with pytest.raises(ConfigError, match="keep"):
        build_config({"data": {"cit": {"class_names": ["a"], "keep": 0}}}, tiny_overrides)
    with pytest.raises(ConfigError, match="contrastive"):
        build_config({"objective": "cap", "data": {"cit": {"class_names": ["a"]}}}, tiny_overrides)
