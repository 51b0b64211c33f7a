"""The few-shot math on hand-made cases: Tip-Adapter's affinity and logits, the α/β search and its
tie rule, one Tip-Adapter-F step against AdamW's formula, TIP-X's KL term against scipy, the
support retrieval, the probes' l2 search against scikit-learn, and the split carving."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import softmax as np_softmax
from scipy.stats import entropy
from sklearn.linear_model import LogisticRegression

from vislang.adapt import fewshot_math as fm
from vislang.adapt.fewshot import METHODS, Encoded, FewshotOptions, Row, carve, fit
from vislang.adapt.fewshot_probe import cross_modal_set, search_probe
from vislang.errors import ConfigError, DataError
from vislang.eval.probes import fit_logistic, sample_shots


def _unit(*rows) -> torch.Tensor:
    x = torch.tensor(rows, dtype=torch.float32)
    return x / x.norm(dim=1, keepdim=True)


def test_prototypes_and_zeroshot_logits_by_hand():
    # class 0 prompts [3, 4] and [1, 0]: normalised (0.6, 0.8) and (1, 0), mean (0.8, 0.4), norm sqrt(0.8)
    prototypes = fm.class_prototypes([torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[0.0, 2.0]])])
    assert torch.allclose(prototypes, torch.tensor([[0.8, 0.4], [0.0, 1.0]]) / torch.tensor([[math.sqrt(0.8)], [1.0]]))
    logits = fm.zeroshot_logits(torch.tensor([[1.0, 0.0]]), prototypes)
    assert torch.allclose(logits, torch.tensor([[100 * 0.8 / math.sqrt(0.8), 0.0]]))


def test_tip_adapter_logits_by_hand():
    f = torch.tensor([[1.0, 0.0]])
    keys = _unit([0.6, 0.8], [1.0, 0.0], [0.0, 1.0])  # cosines with f: 0.6, 1, 0
    values = fm.one_hot(torch.tensor([1, 1, 0]), 2)
    prototypes = _unit([1.0, 0.0], [0.0, 1.0])
    beta, alpha = 2.0, 3.0
    affinity = [math.exp(-2 * 0.4), 1.0, math.exp(-2.0)]
    assert torch.allclose(fm.cache_affinity(f, keys, beta), torch.tensor([affinity]))
    expected = [100.0 + alpha * affinity[2], 0.0 + alpha * (affinity[0] + affinity[1])]
    assert torch.allclose(fm.tip_logits(f, prototypes, keys, values, alpha, beta), torch.tensor([expected]))


def _cache_case():
    """Zero-shot calls every point class 0; the cache (one key per class) can correct class 1 points."""
    prototypes = _unit([1.0, 0.0], [0.0, 1.0])
    val_x = _unit([1.0, 0.05], [1.0, 0.2], [1.0, 0.3], [1.0, 0.0])
    val_y = torch.tensor([1, 1, 1, 0])
    keys = _unit([1.0, 0.2], [0.0, 1.0])
    values = fm.one_hot(torch.tensor([1, 0]), 2)
    return val_x, val_y, prototypes, keys, values


def test_tip_search_is_the_brute_force_optimum_with_its_tie_rule():
    val_x, val_y, prototypes, keys, values = _cache_case()
    alphas, betas = (0.1, 1.0, 10.0, 100.0), (1.0, 5.0, 10.0)
    choice = fm.search_tip(val_x, val_y, prototypes, keys, values, alphas, betas)
    best = None
    for a in sorted(alphas):  # the tie rule: smallest α first, then smallest β
        for b in sorted(betas):
            zs = 100 * val_x.numpy() @ prototypes.numpy().T
            cache = np.exp(-b * (1 - val_x.numpy() @ keys.numpy().T)) @ values.numpy()
            acc = float(((zs + a * cache).argmax(1) == val_y.numpy()).mean())
            if best is None or acc > best[0]:
                best = (acc, a, b)
    assert (choice.val_acc, choice.alpha, choice.beta) == pytest.approx(best)
    assert choice.val_acc > 0.25  # the cache does correct something: zero-shot alone gets 1 of 4


def test_tip_search_ties_go_to_the_smallest_alpha_and_beta():
    prototypes = _unit([1.0, 0.0], [0.0, 1.0])
    val_x, val_y = _unit([1.0, 0.1], [0.1, 1.0]), torch.tensor([0, 1])  # zero-shot is already right
    keys, values = _unit([1.0, 0.0], [0.0, 1.0]), fm.one_hot(torch.tensor([0, 1]), 2)
    choice = fm.search_tip(val_x, val_y, prototypes, keys, values, (5.0, 0.5, 2.0), (3.0, 1.0))
    assert (choice.alpha, choice.beta, choice.val_acc) == (0.5, 1.0, 1.0)


def test_one_tip_f_step_is_adamw_on_the_leave_one_out_loss():
    torch.manual_seed(0)
    keys = fm.normalize(torch.randn(6, 4))
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    prototypes = fm.normalize(torch.randn(3, 4))
    choice = fm.TipChoice(alpha=2.0, beta=3.0, val_acc=0.0)
    val = (keys, labels)
    lr = 0.01
    result = fm.train_tip_f(keys, labels, prototypes, choice, val, epochs=1, lr=lr)
    # the same loss written out: each shot's own key masked, mean cross-entropy
    w = keys.clone().requires_grad_(True)
    affinity = torch.exp(-3.0 * (1 - keys @ w.T)) * (1 - torch.eye(6))
    logits = 100 * keys @ prototypes.T + 2.0 * affinity @ torch.nn.functional.one_hot(labels, 3).float()
    torch.nn.functional.cross_entropy(logits, labels).backward()
    g = w.grad
    # AdamW's first step: decay by lr·0.01, then m̂/(√v̂ + eps) = g / (|g| + 1e-4)
    expected = keys * (1 - lr * 0.01) - lr * g / (g.abs() + 1e-4)
    assert result.epoch == 1
    assert torch.allclose(result.keys, expected, atol=1e-6)


def test_tip_f_keeps_the_best_validation_epoch():
    torch.manual_seed(1)
    keys = fm.normalize(torch.randn(12, 5))
    labels = torch.arange(3).repeat_interleave(4)
    prototypes = fm.normalize(torch.randn(3, 5))
    val = (fm.normalize(torch.randn(30, 5)), torch.randint(0, 3, (30,)))
    choice = fm.TipChoice(alpha=5.0, beta=2.0, val_acc=0.0)
    result = fm.train_tip_f(keys, labels, prototypes, choice, val, epochs=5, lr=0.05)
    values = fm.one_hot(labels, 3)
    again = fm.accuracy(fm.tip_logits(val[0], prototypes, result.keys, values, 5.0, 2.0), val[1])
    assert 1 <= result.epoch <= 5 and again == result.val_acc
    assert not torch.equal(result.keys, keys)  # it trained
    with pytest.raises(DataError, match="epochs"):
        fm.train_tip_f(keys, labels, prototypes, choice, val, epochs=0)


def test_kl_matrix_against_scipy():
    torch.manual_seed(2)
    p, q = torch.softmax(torch.randn(3, 4), 1), torch.softmax(torch.randn(5, 4), 1)
    expected = np.array([[entropy(p[i].numpy(), q[j].numpy()) for j in range(5)] for i in range(3)])
    assert np.allclose(fm.kl_matrix(p, q).numpy(), expected, atol=1e-6)
    assert np.allclose(np.diag(fm.kl_matrix(p, p).numpy()), 0.0, atol=1e-7)


def test_rescale_rows_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 4.0, 4.0]])
    target = torch.tensor([[0.2, 0.8, 0.5], [0.1, 0.3, -0.2]])
    out = fm.rescale_rows(x, target)
    assert torch.allclose(out, torch.tensor([[0.2, 0.5, 0.8], [-0.2, -0.2, -0.2]], dtype=torch.float64))


def _tipx_numpy(f, w, s, labels, alpha, beta, gamma):
    """TIP-X written independently: scipy's softmax and entropy, row-wise min-max."""
    f, w, s = f.numpy().astype(np.float64), w.numpy().astype(np.float64), s.numpy().astype(np.float64)
    values = np.eye(w.shape[0])[labels]
    p, q = np_softmax(f @ w.T, axis=1), np_softmax(s @ w.T, axis=1)
    kl = np.array([[entropy(pi, qj) for qj in q] for pi in p])
    aff = f @ s.T
    lo, hi = kl.min(1, keepdims=True), kl.max(1, keepdims=True)
    scaled = (kl - lo) / (hi - lo) * (aff.max(1, keepdims=True) - aff.min(1, keepdims=True)) + aff.min(1, keepdims=True)
    return 100 * f @ w.T + alpha * np.exp(-beta * (1 - aff)) @ values + gamma * (-scaled) @ values


def test_tipx_logits_against_an_independent_implementation():
    torch.manual_seed(3)
    f, w, s = fm.normalize(torch.randn(4, 6)), fm.normalize(torch.randn(3, 6)), fm.normalize(torch.randn(9, 6))
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    choice = fm.TipChoice(alpha=1.5, beta=4.0, val_acc=0.0, gamma=7.0)
    got = fm.tipx_logits(f, w, s, fm.one_hot(labels, 3), choice)
    assert np.allclose(got.numpy(), _tipx_numpy(f, w, s, labels.numpy(), 1.5, 4.0, 7.0), atol=1e-4)


def test_tipx_search_is_the_brute_force_optimum():
    torch.manual_seed(4)
    w = fm.normalize(torch.randn(3, 6))
    val_y = torch.randint(0, 3, (40,))
    val_x = fm.normalize(w[val_y] * 0.3 + torch.randn(40, 6))
    s = fm.normalize(w.repeat_interleave(3, 0) + 0.5 * torch.randn(9, 6))
    labels = torch.arange(3).repeat_interleave(3)
    grid = dict(alphas=(0.1, 10.0, 100.0), betas=(1.0, 8.0), gammas=(0.1, 30.0, 100.0))
    choice = fm.search_tipx(val_x, val_y, w, s, fm.one_hot(labels, 3), **grid)
    best = None
    for a in grid["alphas"]:
        for g in grid["gammas"]:
            for b in grid["betas"]:
                acc = float((_tipx_numpy(val_x, w, s, labels.numpy(), a, b, g).argmax(1) == val_y.numpy()).mean())
                if best is None or acc > best[0]:
                    best = (acc, a, g, b)
    assert (choice.val_acc, choice.alpha, choice.gamma, choice.beta) == pytest.approx(best)


def test_support_retrieval_by_hand():
    pool = _unit([1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.2, 1.0], [-1.0, 0.0])
    prototypes = _unit([1.0, 0.0], [0.0, 1.0])
    chosen, labels = fm.retrieve_support(pool, prototypes, 2)
    assert chosen.tolist() == [0, 2, 1, 3] and labels.tolist() == [0, 0, 1, 1]
    with pytest.raises(DataError, match="fewer than 6 per class"):
        fm.retrieve_support(pool, prototypes, 6)


def _blobs(n_per_class: int, seed: int, centers: np.ndarray, spread: float = 1.0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([c + spread * rng.standard_normal((n_per_class, centers.shape[1])) for c in centers])
    return torch.tensor(x, dtype=torch.float32), torch.arange(len(centers)).repeat_interleave(n_per_class)


def test_probe_search_follows_sklearn_and_does_not_refit_on_validation():
    centers = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    train, val = _blobs(3, 0, centers, 0.8), _blobs(30, 1, centers, 0.8)
    grid = (1e-3, 1.0, 100.0)
    probe = search_probe(train, val, 3, grid=grid)
    for l2, acc in probe.curve:  # every tried l2 scored as scikit-learn's fit at C = 1/l2 scores it
        sk = LogisticRegression(C=1 / l2, tol=1e-10, max_iter=10_000).fit(train[0].numpy(), train[1].numpy())
        assert acc == pytest.approx(float((sk.predict(val[0].numpy()) == val[1].numpy()).mean()))
    best = max(probe.curve, key=lambda c: (c[1], c[0]))  # ties to the larger l2
    assert probe.l2 == best[0]
    weight, bias = fit_logistic(*train, 3, probe.l2)  # the shots only, not shots + validation
    assert torch.allclose(probe.weight, weight) and torch.allclose(probe.bias, bias)
    clip = search_probe(train, val, 3, max_iter=200)
    assert len(clip.curve) >= 7 and clip.curve[0][0] == pytest.approx(1e-6)  # CLIP's search starts at 1e-6


def test_cross_modal_set_adds_every_prompt_as_a_shot():
    x, y = torch.eye(3)[:2], torch.tensor([1, 0])
    prompts = [torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([[0.0, 3.0, 4.0], [0.0, 0.0, 5.0]])]
    xs, ys = cross_modal_set(x, y, prompts)
    assert ys.tolist() == [1, 0, 0, 1, 1]
    assert torch.allclose(xs[2:], torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8], [0.0, 0.0, 1.0]]))


def test_carve_is_disjoint_and_seeded():
    cand, val, pool = carve(20, 5, 6, seed=3)
    assert (len(cand), len(val), len(pool)) == (9, 5, 6)
    assert sorted(np.concatenate([cand, val, pool]).tolist()) == list(range(20))
    assert np.array_equal(carve(20, 5, 6, seed=3)[1], val) and not np.array_equal(carve(20, 5, 6, seed=4)[1], val)
    with pytest.raises(ConfigError, match="cannot carve"):
        carve(10, 5, 5, seed=0)


def test_row_reports_population_std():
    row = Row("t", "s", "tip_adapter", 4, [0.5, 0.7, 0.9])
    assert row.mean == pytest.approx(0.7) and row.std == pytest.approx(np.std([0.5, 0.7, 0.9]))


def _synthetic_encoded() -> tuple[Encoded, torch.Tensor, torch.Tensor]:
    """Three classes around orthogonal directions; the text prototype of class 2 leans towards
    class 1 (2 e1 + e2), so zero-shot calls some class-1 images class 2 and labelled shots fix it."""
    torch.manual_seed(5)
    basis = torch.eye(3, 8)

    def draw(n):
        y = torch.arange(3).repeat(n)
        return fm.normalize(3 * basis[y] + torch.randn(len(y), 8)), y

    prompts = [basis[[0]], basis[[1]], (2 * basis[1] + basis[2])[None]]
    x, y = draw(20)
    pool, _ = draw(30)
    encoded = Encoded(prompts, fm.class_prototypes(prompts), x, y, draw(40), pool, draw(4))  # a labelled support
    return encoded, *draw(100)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_fits_and_scores(method):
    encoded, test_x, test_y = _synthetic_encoded()
    idx = sample_shots(encoded.y, 4, seed=0)
    classifier, params = fit(method, encoded, idx, FewshotOptions(epochs=3, support_per_class=4), seed=0)
    logits = classifier(test_x)
    assert logits.shape == (300, 3)
    zeroshot = fm.accuracy(fm.zeroshot_logits(test_x, encoded.prototypes), test_y)
    acc = fm.accuracy(logits, test_y)
    if method == "zeroshot":
        assert params == {}
    elif method == "sus_x":  # no labels: its support set, retrieved by the leaning prototype, cannot fix class 2
        assert set(params) == {"alpha", "beta", "gamma", "val_acc"} and acc >= zeroshot - 0.02
    else:  # 4 labelled shots (or given support images) per class correct the leaning prototype
        assert acc > zeroshot + 0.05, (method, acc, zeroshot, params)


def test_options_refuse_bad_values():
    with pytest.raises(ConfigError, match="unknown 'tipp'"):
        FewshotOptions(methods=("tipp",)).check()
    with pytest.raises(ConfigError, match="--shots"):
        FewshotOptions(shots=(0, 2)).check()
    with pytest.raises(ConfigError, match="--n-val"):
        FewshotOptions(n_val=0).check()


def test_support_option_and_method_go_together(tmp_path):
    with pytest.raises(ConfigError, match="sus_x_support go together"):
        FewshotOptions(methods=("zeroshot", "sus_x_support")).check()
    with pytest.raises(ConfigError, match="sus_x_support go together"):
        FewshotOptions(methods=("zeroshot",), support_dir=str(tmp_path)).check()
    with pytest.raises(DataError, match="--support: not a folder: "):
        FewshotOptions(methods=("sus_x_support",), support_dir=str(tmp_path / "nowhere")).check()
    FewshotOptions(methods=("sus_x_support",), support_dir=str(tmp_path)).check()
    assert "sus_x_support" not in FewshotOptions().methods  # the default runs without a support folder


def test_support_folder_names_match_classes():
    from vislang.adapt.fewshot_support import same_name

    assert same_name("Golden Retriever", "Golden Retriever") and same_name("golden_retriever", "Golden Retriever")
    assert same_name("CIRCLE", "circle") and not same_name("circles", "circle") and not same_name("golden", "golden r")
