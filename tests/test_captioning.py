"""Captioning objectives (Cap, CapPa), CoCa, log-likelihood scoring and KV-cached generation."""

from __future__ import annotations

import math

import pytest
import torch

from vislang.config import ModelConfig
from vislang.experiment import build_config, build_objective
from vislang.generation import GenerationConfig, generate
from vislang.losses import clip_loss
from vislang.models.text.decoder import TextDecoder
from vislang.objectives.captioning import caption_loss, sequence_log_likelihood
from vislang.objectives.towers import build_captioner, build_coca

VOCAB, PAD, SOT, EOT = 50, 0, 1, 2


SMALL_MODEL = {
    "embed_dim": 16,
    "vision": {"image_size": 16, "patch_size": 8, "width": 16, "depth": 1, "heads": 2},
    "text": {"width": 16, "heads": 2, "depth": 1, "context_length": 12},
}
DECODER_DEPTH, N_QUERIES = 1, 4


def small_config(objective: str, *extra: str):
    decoder = {"depth": DECODER_DEPTH, **({"n_queries": N_QUERIES} if objective == "coca" else {})}
    return build_config({"model": SMALL_MODEL, "objective": {"kind": objective, "decoder": decoder}}, list(extra))


def small_model() -> ModelConfig:
    return ModelConfig(**SMALL_MODEL)


def small_captioner():
    return build_captioner(small_model(), DECODER_DEPTH, VOCAB, PAD)


def small_coca():
    return build_coca(small_model(), DECODER_DEPTH, N_QUERIES, VOCAB, PAD)


def captions(n: int, length: int = 12) -> torch.Tensor:
    torch.manual_seed(1)
    tokens = torch.full((n, length), PAD)
    for row in range(n):
        words = torch.randint(3, VOCAB, (int(torch.randint(2, length - 2, ())),))
        tokens[row, : len(words) + 2] = torch.cat([torch.tensor([SOT]), words, torch.tensor([EOT])])
    return tokens


def test_cappa_parallel_share_matches_config():
    objective = build_objective(small_config("cappa", "objective.parallel_prob=0.75"), VOCAB, PAD)
    batch = {"image": torch.randn(2000, 3, 16, 16), "text": captions(2000)}
    with torch.no_grad():
        share = objective.loss(batch)["parallel_share"].item()
    assert abs(share - 0.75) < 0.04  # 2000 Bernoulli(0.75) draws: sd ~0.01
    cap = build_objective(small_config("cap"), VOCAB, PAD)
    assert "parallel_share" not in cap.loss({"image": batch["image"][:4], "text": batch["text"][:4]})


def test_parallel_rows_have_no_causal_mask_and_ignore_their_inputs():
    torch.manual_seed(0)
    model = small_captioner().eval()
    images, tokens = torch.randn(2, 3, 16, 16), captions(2)[:, :-1]
    mask = model.decoder._self_mask(tokens, torch.tensor([True, False]), False)
    assert torch.all(mask[0] == 0)  # parallel row: every position sees every position
    assert torch.isinf(mask[1, 0].triu(1)[mask[1, 0].triu(1) != 0]).all() and torch.all(mask[1, 0].tril() == 0)

    changed = tokens.clone()
    changed[:, 5] = 7
    for parallel in (torch.tensor([True, True]), torch.tensor([False, False])):
        a = model(images, tokens, parallel)
        b = model(images, changed, parallel)
        if parallel[0]:  # inputs are all [MASK]: the tokens cannot matter
            torch.testing.assert_close(a, b)
        else:  # teacher forcing: positions before 5 are unaffected, 5 onwards see the change
            torch.testing.assert_close(a[:, :5], b[:, :5])
            assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_caption_loss_ignores_only_trailing_padding():
    """Padding is what follows the end token; the padding id inside a caption (OpenAI's id 0 is
    also "!") is a real target."""
    logits = torch.randn(2, 5, VOCAB)
    tokens = torch.tensor([[SOT, 5, PAD, 6, EOT, PAD], [SOT, 7, EOT, PAD, PAD, PAD]])
    targets = tokens[:, 1:]
    keep = torch.tensor([[True, True, True, True, False], [True, True, False, False, False]])
    expected = -logits.log_softmax(-1).gather(-1, targets[..., None])[..., 0][keep].mean()
    torch.testing.assert_close(caption_loss(logits, tokens, PAD), expected)


def test_coca_loss_is_the_weighted_sum():
    torch.manual_seed(0)
    cfg = small_config("coca", "objective.contrastive_weight=0.5", "objective.caption_weight=3.0")
    objective = build_objective(cfg, VOCAB, PAD)
    batch = {"image": torch.randn(6, 3, 16, 16), "text": captions(6)}
    parts = objective.loss(batch)
    torch.testing.assert_close(parts["loss"], 0.5 * parts["contrastive"] + 3.0 * parts["caption"])
    model = objective.model
    expected = clip_loss(model.encode_image(batch["image"]), model.encode_text(batch["text"]), model.scale())
    torch.testing.assert_close(parts["contrastive"], expected)

    # With caption weight 0 the multimodal decoder gets no gradient; the unimodal text blocks do.
    objective = build_objective(small_config("coca", "objective.caption_weight=0"), VOCAB, PAD)
    objective.loss(batch)["loss"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in objective.model.decoder.multimodal.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in objective.model.decoder.unimodal.parameters())


class FixedDecoder(torch.nn.Module):
    """Logits that depend only on the context's first value: log p(token | context c) known exactly."""

    def forward(self, tokens, context):
        b, length = tokens.shape
        logits = torch.zeros(b, length, VOCAB)
        logits[:, :, 10] = context[:, 0, 0, None] * 2.0  # context 1 favours token 10
        logits[:, :, 11] = (1 - context[:, 0, 0, None]) * 2.0  # context 0 favours token 11
        return logits, None


def test_log_likelihood_on_a_hand_made_case():
    context = torch.tensor([[[1.0]], [[0.0]]])
    tokens = torch.tensor([[SOT, 10, EOT, PAD], [SOT, 10, EOT, PAD]])
    got = sequence_log_likelihood(FixedDecoder(), context, tokens, PAD)
    # context 1: logits 2 for token 10, 0 elsewhere; two scored targets (10 and <eot>), pad ignored
    z1 = math.log(math.exp(2) + (VOCAB - 1))
    z0 = math.log(math.exp(2) + (VOCAB - 1))
    expected = torch.tensor([(2 - z1) + (0 - z1), (0 - z0) + (0 - z0)])
    torch.testing.assert_close(got, expected)


def test_captioner_zero_shot_picks_the_likeliest_class():
    """Scoring through the objective: image i's context makes class i's prompt likeliest."""
    objective = build_objective(small_config("cap"), VOCAB, PAD)
    objective.model.decoder = FixedDecoder()
    objective.model.image_context = lambda images: images  # "images" are the contexts here
    contexts = torch.tensor([[[1.0]], [[0.0]], [[1.0]]])
    prompts = torch.tensor([[SOT, 10, EOT, PAD], [SOT, 11, EOT, PAD]])  # class 0 says 10, class 1 says 11
    texts = objective.text_features(prompts)
    classes = objective.ensemble_texts(texts.view(1, 2, *texts.shape[1:]))
    scores = objective.scores(objective.image_features(contexts), classes)
    assert scores.argmax(dim=1).tolist() == [0, 1, 0]
    pair = objective.pair_scores(contexts, texts.unsqueeze(0).expand(3, -1, -1, -1))
    torch.testing.assert_close(pair, scores)


@pytest.mark.parametrize("build", [small_captioner, small_coca])
@pytest.mark.parametrize("method", ["greedy", "beam", "sample"])
def test_kv_cache_generates_the_same_tokens(build, method):
    torch.manual_seed(0)
    model = build().eval()
    torch.nn.init.normal_(model.decoder.head.weight, std=0.5)  # peaked distributions, varied tokens
    images = torch.randn(5, 3, 16, 16)
    outputs = [
        generate(model, images, SOT, EOT, PAD, GenerationConfig(method=method, use_cache=cache, top_k=20, top_p=0.9))
        for cache in (True, False)
    ]
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    assert outputs[0].shape == (5, 12) and (outputs[0][:, 0] == SOT).all()
    assert ((outputs[0] == EOT).sum(dim=1) == 1).all()  # every caption ends exactly once


def test_beam_search_finds_a_better_sequence_than_greedy():
    torch.manual_seed(0)
    model = small_captioner().eval()
    torch.nn.init.normal_(model.decoder.head.weight, std=0.5)
    images = torch.randn(8, 3, 16, 16)
    context = model.image_context(images)
    greedy = generate(model, images, SOT, EOT, PAD, GenerationConfig(max_length=6))
    beam = generate(model, images, SOT, EOT, PAD, GenerationConfig(method="beam", beam_size=8, max_length=6))

    # with length_penalty 1 beams maximise the mean log-likelihood per generated token
    def mean_ll(tokens):
        return sequence_log_likelihood(model.decoder, context, tokens, PAD) / ((tokens != PAD).sum(1) - 1)

    assert (mean_ll(beam) >= mean_ll(greedy) - 1e-5).all()


def test_decoder_step_matches_full_pass():
    torch.manual_seed(0)
    decoder = TextDecoder(VOCAB, 12, 16, 2, 4.0, 1, 1, PAD, cls_token=True)
    tokens, context = captions(3)[:, :8], torch.randn(3, 5, 16)
    full = decoder(tokens, context)[0]
    cache: dict = {}
    prefill = decoder.step(tokens[:, :3], context, cache, 0)  # several tokens at once, then one by one
    steps = [prefill] + [decoder.step(tokens[:, i : i + 1], context, cache, i) for i in range(3, 8)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
