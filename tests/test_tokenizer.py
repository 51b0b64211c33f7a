"""The toolkit's byte-level BPE: special tokens, padding, truncation, save/load."""

from __future__ import annotations

import pytest

from vislang.errors import ConfigError
from vislang.tokenizers import BPETokenizer

CORPUS = [
    f"a {size} {color} {shape}"
    for size in ("small", "large")
    for color in ("red", "blue", "green")
    for shape in ("circle", "square", "star")
] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return BPETokenizer.train(CORPUS, vocab_size=300, context_length=8)


def test_layout_sot_tokens_eot_pad(tokenizer):
    tokens = tokenizer(["a red circle"])
    assert tokens.shape == (1, 8)
    row = tokens[0].tolist()
    assert row[0] == tokenizer.sot_id
    eot = row.index(tokenizer.eot_id)
    assert all(t == tokenizer.pad_id for t in row[eot + 1 :])
    assert tokenizer.decode(row) == "a red circle"


def test_frequent_words_become_single_tokens(tokenizer):
    assert len(tokenizer.encode(" circle")) == 1


def test_truncation_keeps_eot_last(tokenizer):
    row = tokenizer(["a red circle " * 20])[0].tolist()
    assert row[0] == tokenizer.sot_id and row[-1] == tokenizer.eot_id and tokenizer.pad_id not in row


def test_lowercase_and_unknown_bytes(tokenizer):
    assert tokenizer(["A RED Circle"]).tolist() == tokenizer(["a red circle"]).tolist()
    assert tokenizer(["über 🙂"]).shape == (1, 8)  # byte-level: nothing is out of vocabulary


def test_save_load_round_trip(tokenizer, tmp_path):
    tokenizer.save(tmp_path / "tokenizer.json")
    again = BPETokenizer.load(tmp_path / "tokenizer.json", context_length=8)
    texts = ["a small blue star", "a large green square"]
    assert again(texts).tolist() == tokenizer(texts).tolist()
    assert again.vocab_size == tokenizer.vocab_size


def test_load_errors(tmp_path):
    with pytest.raises(ConfigError, match="tokenizer file not found"):
        BPETokenizer.load(tmp_path / "nope.json", 8)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read tokenizer"):
        BPETokenizer.load(tmp_path / "bad.json", 8)
