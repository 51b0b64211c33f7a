"""The regex (domain phrase) tokenizer: phrases as single tokens over a byte-level BPE, exact
round trips, mined and listed phrases, saving, and a run trained with it loaded back."""

from __future__ import annotations

import random
import statistics

import pytest
import torch

import vislang
from vislang.config import TokenizerConfig
from vislang.errors import ConfigError
from vislang.experiment import build_config
from vislang.tokenizer_phrases import PhraseMatcher, mine_phrases, normalise, read_phrases
from vislang.tokenizer_stats import build_from_section
from vislang.tokenizers import BPETokenizer, PhraseTokenizer
from vislang.train.loop import train

PHRASES = [
    "moderate concentric left ventricular hypertrophy",
    "mild concentric left ventricular hypertrophy",
    "normal left ventricular size and systolic function",
    "no pericardial effusion",
    "small pericardial effusion without tamponade physiology",
    "the left atrium is moderately dilated",
    "the left atrium is normal in size",
    "the right ventricle is normal in size and function",
    "trace mitral regurgitation",
    "moderate mitral regurgitation",
    "mild tricuspid regurgitation",
    "no significant aortic stenosis",
    "the aortic valve is trileaflet",
    "grade i diastolic dysfunction",
    "impaired relaxation pattern of left ventricular diastolic filling",
    "estimated right ventricular systolic pressure is",
    "the inferior vena cava is normal in size with normal respiratory variation",
    "regional wall motion abnormality involving the inferior wall",
    "no regional wall motion abnormalities",
    "compared with the prior study",
]
# free text between the findings: not in the phrase list, varied, with numbers
FREE = [
    "patient in sinus rhythm", "technically difficult study", "images obtained at bedside", "limited views",
    "contrast was used", "heart rate {n}", "bp {n}/{m}", "see prior report from {n} days ago",
    "follow up advised", "poor acoustic windows", "weight {n} kg", "study ordered for dyspnea",
]  # fmt: skip
VOCAB, CONTEXT = 512, 77


def report(rng: random.Random) -> str:
    """An echo report: five to nine findings, the ejection fraction, one or two free remarks."""
    sentences = []
    for phrase in rng.sample(PHRASES, rng.randint(5, 9)):
        if phrase.endswith(" is"):
            phrase = f"{phrase} {rng.randint(15, 60)} mmHg"
        sentences.append(phrase.capitalize() + ".")
    sentences.insert(rng.randrange(len(sentences)), f"Ejection fraction is estimated at {rng.randint(20, 75)} %.")
    for _ in range(rng.randint(1, 2)):
        remark = rng.choice(FREE).format(n=rng.randint(1, 199), m=rng.randint(40, 99))
        sentences.insert(rng.randrange(len(sentences) + 1), remark.capitalize() + ".")
    return "  ".join(sentences) if rng.random() < 0.2 else " ".join(sentences)


def report_corpus(n: int = 600, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [report(rng) for _ in range(n)]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return report_corpus()


@pytest.fixture(scope="module")
def mined(corpus) -> PhraseTokenizer:
    return build_from_section(TokenizerConfig(kind="regex", vocab_size=VOCAB, mine_phrases=64), corpus, CONTEXT)


def mean_tokens(tokenizer: BPETokenizer, texts: list[str]) -> float:
    return statistics.mean(len(tokenizer.encode(t)) for t in texts)


def test_mined_phrases_cut_tokens_per_report_four_times(corpus, mined):
    baseline = BPETokenizer.train(corpus, VOCAB, CONTEXT)
    assert mined.vocab_size <= VOCAB == baseline.vocab_size
    assert mean_tokens(baseline, corpus) >= 4 * mean_tokens(mined, corpus)


def test_round_trip_is_exact_on_every_text(corpus, mined):
    extra = ["Héllo  Wörld\t ünïcode 😀", "(no pericardial effusion)", "no pericardial effusions", "", "  x  "]
    for text in corpus + extra:
        assert mined.decode(mined.encode(text)) == mined.normalise(text) == normalise(text)
        assert mined.decode(mined([text])[0].tolist()) == normalise(text) or len(mined.encode(text)) > CONTEXT - 2


def test_listed_phrases_are_single_tokens_longest_first(corpus, tmp_path):
    path = tmp_path / "phrases.txt"
    path.write_text("# findings\nNo pericardial effusion\n\nno pericardial\n" + "\n".join(PHRASES) + "\n")
    assert read_phrases(path)[:2] == ["no pericardial effusion", "no pericardial"]
    tok = build_from_section(TokenizerConfig(kind="regex", vocab_size=VOCAB, phrases=str(path)), corpus, CONTEXT)
    ids = tok.encode("No pericardial effusion. no pericardial")
    assert ids[0] == tok.phrase_offset + tok.phrases.index("no pericardial effusion")
    assert ids[-1] == tok.phrase_offset + tok.phrases.index("no pericardial")
    assert mean_tokens(BPETokenizer.train(corpus, VOCAB, CONTEXT), corpus) > 2 * mean_tokens(tok, corpus)
    # a phrase inside a longer word is not one: boundaries are words
    assert PhraseMatcher(["no pericardial"]).pieces("no pericardials") == [" no pericardials"]


def test_mining_finds_the_report_phrases_without_overlaps(corpus):
    phrases = mine_phrases([normalise(t) for t in corpus], 40, min_count=5, max_words=8)
    assert len(phrases) == 40 == len(set(phrases))
    assert "ejection fraction is estimated at" in phrases
    assert all(2 <= len(p.split()) <= 8 for p in phrases)
    assert not any(str(n) in p.split() for p in phrases for n in range(100, 199))  # no rare numbers


def test_save_and_load_give_identical_ids(corpus, mined, tmp_path):
    mined.save(tmp_path / "tokenizer.json")
    loaded = BPETokenizer.load(tmp_path / "tokenizer.json", CONTEXT)
    assert isinstance(loaded, PhraseTokenizer) and loaded.phrases == mined.phrases
    assert torch.equal(loaded(corpus), mined(corpus))
    assert loaded.vocab_size == mined.vocab_size


def test_call_pads_and_truncates_like_the_bpe(mined):
    short, long = "no pericardial effusion. heart rate 72.", " ".join(["heart rate 72"] * 40)
    rows = mined([short, long])
    ids = mined.encode(short)
    assert rows.shape == (2, CONTEXT)
    assert rows[0, : len(ids) + 2].tolist() == [mined.sot_id, *ids, mined.eot_id]
    assert (rows[0, len(ids) + 2 :] == mined.pad_id).all()
    assert rows[1].tolist() == [mined.sot_id, *mined.encode(long)[: CONTEXT - 2], mined.eot_id]


def test_too_small_vocabulary_and_bad_files_are_one_line(corpus, tmp_path):
    with pytest.raises(ConfigError, match="vocab_size 300 leaves"):
        PhraseTokenizer.train_phrases(corpus, [f"phrase number {i}" for i in range(50)], 300, CONTEXT)
    with pytest.raises(ConfigError, match="phrases: file not found"):
        read_phrases(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(ConfigError, match="holds no phrases"):
        read_phrases(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="needs phrases"):
        TokenizerConfig(kind="regex")
    with pytest.raises(ConfigError, match="vislang_phrases"):
        BPETokenizer.from_json('{"vislang_kind": "regex"}', CONTEXT)


def test_a_regex_run_saves_its_tokenizer_and_load_gives_the_same_ids(tiny_overrides, tmp_path):
    overrides = [o for o in tiny_overrides if not o.startswith("eval.tasks")]
    cfg = build_config(
        {},
        overrides + ["train.steps=2", "train.eval_every=2", "train.checkpoint_every=2", "eval.tasks=[]",
                     "tokenizer.kind=regex", "tokenizer.mine_phrases=20", "tokenizer.min_phrase_count=3"],
    )  # fmt: skip
    train(cfg, tmp_path / "run", quiet=True)
    saved = BPETokenizer.load(tmp_path / "run" / "tokenizer.json", 24)
    assert isinstance(saved, PhraseTokenizer) and len(saved.phrases) == 20
    _, tokenizer, _ = vislang.load(tmp_path / "run")
    captions = ["a red circle left of a blue square", "a small green triangle", saved.phrases[0]]
    assert isinstance(tokenizer, PhraseTokenizer)
    assert torch.equal(tokenizer(captions), saved(captions))
    assert tokenizer.encode(saved.phrases[0]) == [saved.phrase_offset]
