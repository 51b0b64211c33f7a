"""Tokenizers: the trained byte-level BPE (special tokens, padding, truncation, save/load) and
OpenAI CLIP's BPE, token for token against OpenCLIP's."""

from __future__ import annotations

import pytest
import torch

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


# -- OpenAI CLIP's tokenizer, against OpenCLIP's (the test extra) ---------------------------------


def openai_pair():
    from open_clip.tokenizer import SimpleTokenizer, default_bpe

    return BPETokenizer.openai(default_bpe()), SimpleTokenizer()


def random_texts(n: int, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    pieces = [
        *"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        *".,;:!?'\"()[]{}-_/\\@#$%^&*+=<>|~`",
        " ", "  ", "\t", "\n", "\u00a0", "\u2009",
        "é", "ñ", "ü", "ß", "Ω", "ж", "日本", "語", "한국", "🐱", "🚀", "ﬁ", "½", "²", "Ⅻ",
        "&amp;", "&lt;", "&quot;", "&#39;", "don't", "it's", "we're", "I'll", "you'd", "Ã©",
        "photo", "Photo", "PHOTO", "of a", "the", "circle", "square", "running",
    ]  # fmt: skip
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 40))) for _ in range(n)]


def test_openai_tokenizer_gives_openclips_ids_for_any_text():
    ours, reference = openai_pair()
    texts = random_texts(10_000) + ["x" * 500, " ".join(["word"] * 100), "A red circle, LEFT of a blue square!!"]
    assert ours.vocab_size == 49408 and ours.pad_id == 0
    got, expected = ours(texts), reference(texts)
    assert got.shape == expected.shape == (len(texts), 77)
    for text, a, b in zip(texts, got, expected):
        assert torch.equal(a, b), repr(text)
    assert got[-3, -1] == ours.eot_id  # a long text keeps its end token last
    assert ours.decode(got[-1].tolist()) == "a red circle , left of a blue square !!"


def test_openai_tokenizer_survives_save_and_checkpoint_json(tmp_path):
    ours, _ = openai_pair()
    ours.save(tmp_path / "tokenizer.json")
    loaded = BPETokenizer.load(tmp_path / "tokenizer.json", 77)
    again = BPETokenizer.from_json(ours.to_json(), 77)
    texts = random_texts(50, seed=1)
    for other in (loaded, again):
        assert other.kind == "openai" and other.pad_id == 0
        assert torch.equal(other(texts), ours(texts))


def test_a_wrong_merges_file_names_itself(tmp_path):
    (tmp_path / "merges.txt").write_text("#version\na b\n")
    with pytest.raises(ConfigError, match="merges.txt"):
        BPETokenizer.openai(tmp_path / "merges.txt")
    with pytest.raises(ConfigError, match="missing.txt.gz"):
        BPETokenizer.openai(tmp_path / "missing.txt.gz")


def test_a_run_trains_with_openais_tokenizer(tmp_path, tiny_overrides):
    from open_clip.tokenizer import default_bpe

    from vislang.experiment import build_config
    from vislang.train.loop import train

    cfg = build_config(
        {},
        tiny_overrides
        + [
            "tokenizer.kind=openai",
            f"tokenizer.path={default_bpe()}",
            "train.steps=2",
            "train.eval_every=2",
            "eval.tasks=[{type: zeroshot, n: 40}, {type: retrieval, n: 40}]",
        ],
    )
    metrics = train(cfg, tmp_path, quiet=True)
    assert 0 <= metrics["zeroshot/color/top1"] <= 1
    saved = BPETokenizer.load(tmp_path / "tokenizer.json", 24)
    assert saved.kind == "openai" and saved.vocab_size == 49408
    with pytest.raises(Exception, match="merges file"):
        build_config({}, ["tokenizer.kind=openai"])
