"""LM objective and the texts-only source: loss against a hand computation, reading texts,
batches of tokens only, and tiny trainings through the one loop."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import TINY
from vislang.config import DataConfig
from vislang.data import build_batches, build_sources, tokenizer_corpus
from vislang.data.decode import BadSample
from vislang.data.texts import TextsSource
from vislang.errors import DataError
from vislang.experiment import build_config
from vislang.models.text.decoder import TextDecoder
from vislang.objectives.lm import LmObjective
from vislang.train.loop import train

FEW_STEPS = ["train.steps=3", "train.eval_every=3", "train.checkpoint_every=3", "eval.tasks=[]"]
TEXTS = ["a red circle", "", "a blue square above a green star", "two yellow triangles", "a small circle"]


@pytest.fixture
def texts_file(tmp_path):
    path = tmp_path / "texts.txt"
    lines = [t.encode() for t in TEXTS] + [b"\xff\xfe not utf-8"]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_lm_loss_equals_hand_computed_cross_entropy():
    torch.manual_seed(0)
    pad = 0
    model = TextDecoder(11, 6, 8, 2, 2.0, 2, 0, pad_id=pad)
    tokens = torch.tensor([[1, 4, 5, 2, 0, 0], [1, 3, 3, 7, 9, 2], [1, 2, 0, 0, 0, 0]])
    lengths = [4, 6, 2]  # real tokens (start ... end) before the padding
    loss = LmObjective(model, pad).loss({"text": tokens})["loss"]
    logits = model(tokens[:, :-1], None)[0].double()
    terms = []
    for row, length in enumerate(lengths):
        for i in range(length - 1):  # position i predicts token i + 1
            scores = logits[row, i].tolist()
            log_z = math.log(sum(math.exp(s) for s in scores))
            terms.append(log_z - scores[tokens[row, i + 1]])
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_texts_source_reads_lines_and_skips_bad_ones(texts_file):
    source = TextsSource(texts_file, "caption", seed=0, shuffle=False)
    assert source.size == 5  # the blank line is not a text; the non-UTF-8 one is, until read
    assert [source.get(p, np.random.default_rng(p))[1] for p in range(4)] == [t for t in TEXTS if t]
    assert source.get(0, np.random.default_rng(0))[0] is None
    with pytest.raises(BadSample):
        source.get(4, np.random.default_rng(0))
    assert source.captions(10) == [t for t in TEXTS if t]  # what the tokenizer trains on


def test_texts_source_from_a_table(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("caption,other\na red circle,x\na blue star,y\n")
    source = TextsSource(table, "caption", seed=0, shuffle=False)
    assert source.size == 2 and source.get(1, np.random.default_rng(0)) == (None, "a blue star")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [("missing.txt", None, "not found"), ("empty.txt", b"\n\n", "no texts"), ("bad.txt", b"\xff\n\xfe\n", "usable")],
)
def test_bad_texts_file_is_one_line(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError) as error:
        TextsSource(path, "caption", seed=0)
    assert message in str(error.value) and str(path) in str(error.value) and "\n" not in str(error.value)


def test_texts_batches_hold_tokens_only_and_feed_the_tokenizer(texts_file):
    data = DataConfig(sources=[{"kind": "texts", "path": str(texts_file)}], num_workers=0)
    sources = build_sources(data, 32, seed=0)
    assert set(tokenizer_corpus(sources, 100)) == {t for t in TEXTS if t}
    tokenize = lambda texts: torch.tensor([[len(t), 1] for t in texts])  # noqa: E731
    vision = build_config({}, TINY).model.vision
    batch = build_batches(data, vision, 10, 0, tokenize, sources)[0]
    assert "image" not in batch and batch["text"].shape[0] + batch["counts"].get("skipped/bad_text", 0) == 10
    mixed = DataConfig(sources=[{"kind": "texts", "path": str(texts_file)}, {"kind": "world"}], num_workers=0)
    with pytest.raises(DataError, match="cannot be mixed"):
        build_sources(mixed, 32, seed=0)


def test_lm_trains_on_world_captions(tmp_path):
    cfg = build_config({}, TINY + FEW_STEPS + ["objective=lm", "objective.depth=2"])
    train(cfg, tmp_path / "run", quiet=True)
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert np.isfinite([r["train/lm"] for r in logged if "train/lm" in r]).all()


def test_lm_trains_on_a_texts_source(tmp_path, texts_file):
    source = f"data.sources=[{{kind: texts, path: {texts_file}}}]"
    cfg = build_config({}, TINY + FEW_STEPS + ["objective=lm", source, "tokenizer.vocab_size=120"])
    train(cfg, tmp_path / "run", quiet=True)
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "train/lm" in r][-1] == 3  # every step trained: tokens-only batches count
