"""Evaluator metrics on hand-made scores and embeddings with known answers."""

from __future__ import annotations

import pytest
import torch

from vislang.eval.metrics import candidate_accuracy, retrieval_recall, topk_accuracy


def test_topk_accuracy_known_answer():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.5, 0.3], [0.6, 0.3, 0.1]])
    labels = torch.tensor([0, 2, 2])  # row 0 right, row 1 second, row 2 third
    out = topk_accuracy(scores, labels, ks=(1, 2, 3))
    assert out == pytest.approx({"top1": 1 / 3, "top2": 2 / 3, "top3": 1.0})


def test_ties_get_random_tie_break_credit():
    # A model that cannot tell the candidates apart must score chance, not 100%.
    assert candidate_accuracy(torch.zeros(10, 2)) == pytest.approx(0.5)
    assert candidate_accuracy(torch.zeros(10, 5)) == pytest.approx(0.2)
    assert candidate_accuracy(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])) == pytest.approx(0.5)
    assert topk_accuracy(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), ks=(1, 2))["top2"] == pytest.approx(2 / 3)


def test_retrieval_identity_embeddings_are_perfect():
    features = torch.eye(6)
    out = retrieval_recall(features, features, torch.arange(6), lambda a, b: a @ b.T, ks=(1, 5))
    assert all(v == pytest.approx(1.0) for v in out.values())


def test_retrieval_known_ranks_and_several_captions():
    # 3 images, 4 texts; text 3 is a second caption of image 0.
    images = torch.eye(3)
    texts = torch.tensor(
        [
            [0.0, 1.0, 0.0],  # says image 1, describes image 0: rank 2 (tie with image 2? no)
            [0.0, 1.0, 0.0],  # describes image 1: rank 1
            [0.9, 0.0, 0.1],  # describes image 2: rank 2 behind image 0
            [1.0, 0.0, 0.0],
        ]
    )  # describes image 0: rank 1
    text_image = torch.tensor([0, 1, 2, 0])
    out = retrieval_recall(images, texts, text_image, lambda a, b: a @ b.T, ks=(1, 2), chunk=2)
    # text→image R@1: texts 1 and 3 hit; text 0 ties images 0 and 2 at 0 below image 1 -> rank 2-3 (R@2 credit 1/2).
    assert out["text_to_image/R@1"] == pytest.approx(2 / 4)
    assert out["text_to_image/R@2"] == pytest.approx((0.5 + 1 + 1 + 1) / 4)
    # image→text: image 0's best own text (3) wins; image 1's own text ties text 0 -> 1/2; image 2's text is
    # beaten by nothing for column 2 (0.1 vs others 0) -> hit.
    assert out["image_to_text/R@1"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert out["image_to_text/R@2"] == pytest.approx(1.0)


def test_retrieval_is_chunk_invariant():
    g = torch.Generator().manual_seed(0)
    images, texts = torch.randn(50, 8, generator=g), torch.randn(70, 8, generator=g)
    text_image = torch.randint(0, 50, (70,), generator=g)
    score = lambda a, b: a @ b.T  # noqa: E731
    whole = retrieval_recall(images, texts, text_image, score, chunk=1000)
    assert retrieval_recall(images, texts, text_image, score, chunk=7) == pytest.approx(whole)


def test_retrieval_matches_brute_force_argsort():
    g = torch.Generator().manual_seed(1)
    images, texts = torch.randn(40, 8, generator=g), torch.randn(40, 8, generator=g)
    scores = images @ texts.T
    out = retrieval_recall(images, texts, torch.arange(40), lambda a, b: a @ b.T, ks=(1, 5))
    ranks_t2i = (scores.T.argsort(dim=1, descending=True) == torch.arange(40)[:, None]).float().argmax(dim=1)
    ranks_i2t = (scores.argsort(dim=1, descending=True) == torch.arange(40)[:, None]).float().argmax(dim=1)
    for k in (1, 5):
        assert out[f"text_to_image/R@{k}"] == pytest.approx((ranks_t2i < k).float().mean().item())
        assert out[f"image_to_text/R@{k}"] == pytest.approx((ranks_i2t < k).float().mean().item())
