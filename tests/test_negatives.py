"""Hard-negative captions (swap rules, verb replacement) and the losses that use them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vislang.data.batches import text_fields
from vislang.data.negatives import (
    negative_caption,
    noun_phrases,
    replace_verb,
    shuffle_words,
    split_words,
    swap_attributes,
    swap_nouns,
    swap_relation,
)
from vislang.experiment import build_config
from vislang.losses import clip_loss, siglip_loss


def apply(rule, caption: str, seed: int = 0) -> str | None:
    out = rule(split_words(caption), np.random.default_rng(seed))
    return None if out is None else " ".join(out)


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("a brown dog on a white sofa", "a white sofa on a brown dog"),
        ("the man is to the left of the old car", "the old car is to the left of the man"),
        ("A cat is sitting under a wooden table .", "a wooden table is sitting under A cat ."),
        ("a horse riding a man", None),  # a verb between the phrases is not a spatial relation
        ("a cup of coffee", None),
    ],
)
def test_relation_swap(caption, expected):
    assert apply(swap_relation, caption) == expected


def test_attribute_swap_exchanges_adjectives_between_objects():
    assert apply(swap_attributes, "a red car next to a small blue house") == "a small blue car next to a red house"
    assert apply(swap_attributes, "the white dog and the black cat") == "the black dog and the white cat"
    assert apply(swap_attributes, "a dog chasing a cat") is None  # no attributes to exchange
    assert apply(swap_attributes, "a red car next to a red house") is None  # exchanging changes nothing


def test_noun_swap_keeps_attributes_in_place():
    assert apply(swap_nouns, "a young woman holding a small umbrella") == "a young umbrella holding a small woman"
    assert apply(swap_nouns, "a photo of a dog") is None  # framing words are not objects
    assert apply(swap_nouns, "a dog next to a dog") is None


def test_verb_replacement_uses_the_lexicon():
    out = apply(replace_verb, "a man riding a horse on the beach")
    assert out is not None and out.split()[2] in ("pushing", "walking", "carrying")
    assert apply(replace_verb, "a red circle above a blue square") is None


def test_shuffle_changes_the_order_and_keeps_the_words():
    words = split_words("two dogs playing with a ball in the park")
    out = shuffle_words(words, np.random.default_rng(3))
    assert out != words and sorted(out) == sorted(words)
    assert shuffle_words(["dog"], np.random.default_rng(0)) is None


def test_noun_phrases_on_free_form_text():
    words = split_words("A woman in a red dress is holding an umbrella next to a tall building.")
    assert [" ".join(words[p.start : p.end]) for p in noun_phrases(words)] == [
        "A woman",
        "a red dress",
        "an umbrella",
        "a tall building",
    ]


def test_negative_caption_picks_an_applicable_rule_and_counts_misses():
    rng = np.random.default_rng(0)
    negative, rule = negative_caption("a small red circle", ["relation", "attribute", "noun"], rng)
    assert negative is None and rule is None
    negative, rule = negative_caption("a small red circle", ["relation", "shuffle"], rng)
    assert rule == "shuffle" and sorted(negative.split()) == sorted("a small red circle".split())

    def tokenize(texts):
        return torch.tensor([[len(t)] for t in texts])

    fields, counts = text_fields(
        ["a red circle above a blue square", "a red circle"], tokenize, ["relation"], np.random.default_rng(0)
    )
    assert fields["text_neg_valid"].tolist() == [True, False]
    assert counts == {"negatives/relation": 1, "negatives/none": 1}


def test_clip_loss_with_negatives_matches_the_formula():
    torch.manual_seed(0)
    image, text, negatives = (F.normalize(torch.randn(n, 8), dim=-1) for n in (5, 5, 3))
    scale = 7.0
    logits = scale * image @ torch.cat([text, negatives]).T  # [5, 8]: B images x (B + N) texts
    labels = torch.arange(5)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(scale * text @ image.T, labels)) / 2
    torch.testing.assert_close(clip_loss(image, text, scale, text_negatives=negatives), expected)

    bias = -2.0
    full = scale * image @ torch.cat([text, negatives]).T + bias
    signs = -torch.ones_like(full)
    signs[labels, labels] = 1
    expected = -F.logsigmoid(signs * full).sum() / 5
    torch.testing.assert_close(siglip_loss(image, text, scale, bias, text_negatives=negatives), expected)


def test_hard_negatives_only_with_contrastive_objectives():
    from vislang.errors import ConfigError

    with pytest.raises(ConfigError, match="hard_negatives"):
        build_config({}, ["objective=cap", "data.hard_negatives=[relation]"])
    with pytest.raises(ConfigError, match="hard_negatives"):
        build_config({}, ["data.hard_negatives=[colour]"])


def test_negative_caption_keeps_capitals_and_articles_right():
    negative, rule = negative_caption("An owl next to a red apple.", ["relation"], np.random.default_rng(0))
    assert (negative, rule) == ("A red apple next to an owl.", "relation")


def test_image_bank_adds_nearest_neighbours_with_their_captions():
    from vislang.objectives.hard_negatives import ImageBank

    bank = ImageBank(4, (1, 2, 2), 3, 2)
    assert bank.neighbours(torch.ones(1, 2)) is None
    features = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=-1)
    images = torch.arange(3.0)[:, None, None, None].expand(3, 1, 2, 2)
    texts = torch.tensor([[10, 0, 0], [11, 0, 0], [12, 0, 0]])
    bank.add(images, texts, features)
    found_images, found_texts = bank.neighbours(torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.8, 0.2]]))
    assert found_texts[:, 0].tolist() == [10, 11]  # distinct neighbours, each with its own caption
    assert found_images[:, 0, 0, 0].tolist() == [0.0, 1.0]
    bank.add(images[:2], texts[:2] + 10, features[:2])  # wraps around: 5 entries into 4 slots
    assert int(bank.filled) == 4 and int(bank.position) == 1
    assert bank.texts[:, 0].tolist() == [21, 11, 12, 20]
    assert {"bank.images", "bank.texts", "bank.features", "bank.filled", "bank.position"} <= set(
        _clip_with_bank().state_dict()
    )


def _clip_with_bank():
    from vislang.experiment import build_objective

    cfg = build_config(
        {}, ["objective.hard_negative_images=8", "model.vision.image_size=32", "model.vision.patch_size=16"]
    )
    return build_objective(cfg, 100, 0)


def test_bank_pairs_join_the_contrastive_loss():
    torch.manual_seed(0)
    objective = _clip_with_bank()
    batch = {"image": torch.randn(4, 3, 32, 32), "text": torch.randint(3, 100, (4, 18))}
    first = objective.loss(batch)  # empty bank: plain CLIP on 4 pairs
    model = objective.model
    with torch.no_grad():
        expected = clip_loss(*model(batch["image"], batch["text"]), model.scale())
    torch.testing.assert_close(first["loss"], expected)
    second = {"image": torch.randn(4, 3, 32, 32), "text": torch.randint(3, 100, (4, 18))}
    with torch.no_grad():
        image, text = model(second["image"], second["text"])
        extra_image, extra_text = model(*objective.bank.neighbours(image))
        expected = clip_loss(torch.cat([image, extra_image]), torch.cat([text, extra_text]), model.scale())
    torch.testing.assert_close(objective.loss(second)["loss"], expected)
    assert 1 <= objective.extra_pairs <= 4 and int(objective.bank.filled) == 8


@pytest.mark.parametrize("objective", ["clip", "siglip"])
def test_a_batch_without_any_valid_negative_still_trains(objective):
    from vislang.experiment import build_objective

    extra = ["model.init_logit_bias=-10"] if objective == "siglip" else []
    cfg = build_config(
        {},
        [
            f"objective={objective}",
            "data.hard_negatives=[relation]",
            "model.vision.image_size=32",
            "model.vision.patch_size=16",
            *extra,
        ],
    )
    torch.manual_seed(0)
    model = build_objective(cfg, 100, 0)
    batch = {"image": torch.randn(4, 3, 32, 32), "text": torch.randint(3, 100, (4, 16))}
    plain = model.loss(batch)["loss"]
    batch |= {"text_neg": torch.randint(3, 100, (4, 16)), "text_neg_valid": torch.zeros(4, dtype=torch.bool)}
    loss = model.loss(batch)["loss"]
    torch.testing.assert_close(loss, plain)
    loss.backward()
