"""The probe math against independent oracles: scikit-learn's LogisticRegression for the
logistic fit, numpy normal equations for the ridge solve, a numpy re-derivation of big_vision's
few-shot protocol, and a brute-force loop for DINO's weighted k-NN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vislang.errors import DataError
from vislang.eval import probes

C, D = 10, 64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These problems are tiny: on a busy two-core machine, handing each small matmul to a second
    thread costs more than it saves, so this module runs on one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _gaussians(spread: float, n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means and per-dimension noise scales drawn once (seed 0), points = mean + noise; ``seed``
    picks the points. The noise is anisotropic so that the best L2 strength is not at either end of
    the grid (isotropic noise would favour the nearest-mean classifier that l2 -> inf gives)."""
    shared = np.random.default_rng(0)
    means = shared.normal(size=(C, D)) * spread
    scales = np.exp(shared.uniform(-1.5, 1.5, size=D))
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(C), n_per_class)
    x = means[y] + rng.normal(size=(len(y), D)) * scales
    perm = rng.permutation(len(y))
    return torch.from_numpy(x[perm]).float(), torch.from_numpy(y[perm])


@pytest.fixture(scope="module")
def hard():
    """Overlapping classes: a linear probe gets well under 100%."""
    train_x, train_y = _gaussians(0.3, 30, 1)
    test_x, test_y = _gaussians(0.3, 30, 2)
    return train_x, train_y, test_x, test_y


@pytest.fixture(scope="module")
def easy():
    train_x, train_y = _gaussians(1.5, 30, 1)
    test_x, test_y = _gaussians(1.5, 30, 2)
    return train_x, train_y, test_x, test_y


def _objective(x, y, weight, bias, l2) -> float:
    """sum_i CE + l2/2 ||W||^2, written out in numpy."""
    logits = x @ weight.T + bias
    logits = logits - logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(y)), y].sum() + 0.5 * l2 * (weight**2).sum())


@pytest.mark.parametrize("case,l2", [("hard", 1e-3), ("hard", 0.1), ("hard", 3.0), ("hard", 100.0), ("easy", 1.0)])
def test_fit_logistic_matches_sklearn(case, l2, request):
    from sklearn.linear_model import LogisticRegression

    train_x, train_y, test_x, test_y = request.getfixturevalue(case)
    x, tx = train_x.double().numpy(), test_x.double().numpy()
    y, ty = train_y.numpy(), test_y.numpy()
    weight, bias = probes.fit_logistic(train_x, train_y, C, l2)
    w, b = weight.numpy(), bias.numpy()
    ours_loss = _objective(x, y, w, b, l2)
    assert ours_loss == pytest.approx(probes.logistic_loss(train_x, train_y, weight, bias, l2), rel=1e-10)

    # scikit-learn's default stopping rule (tol=1e-4) can stop far from the optimum at weak l2:
    # we must reach at least as low a loss
    default = LogisticRegression(C=1 / l2, max_iter=1000).fit(x, y)
    assert ours_loss <= _objective(x, y, default.coef_, default.intercept_, l2) * (1 + 1e-9)

    converged = LogisticRegression(C=1 / l2, max_iter=5000, tol=1e-10).fit(x, y)
    assert abs(((tx @ w.T + b).argmax(1) == ty).mean() - converged.score(tx, ty)) <= 0.005
    assert ours_loss == pytest.approx(_objective(x, y, converged.coef_, converged.intercept_, l2), rel=1e-3)
    if l2 >= 0.1:  # below that the objective is too flat for the weights to be pinned down
        assert ours_loss == pytest.approx(_objective(x, y, converged.coef_, converged.intercept_, l2), rel=1e-6)
        scale = np.abs(converged.coef_).max()
        np.testing.assert_allclose(w, converged.coef_, atol=2e-3 * scale)
        # the intercept is defined up to a shift shared by all classes
        theirs = converged.intercept_ - converged.intercept_.mean()
        np.testing.assert_allclose(b - b.mean(), theirs, atol=2e-3 * max(scale, np.abs(theirs).max()))


def test_fit_logistic_refuses_bad_labels_and_ignores_grad_mode(hard):
    train_x, train_y, _, _ = hard
    reference = probes.fit_logistic(train_x, train_y, C, 3.0)
    with torch.inference_mode():  # features cached under inference mode, a caller under no_grad
        frozen_x, frozen_y = train_x.clone(), train_y.clone()
        inside = probes.fit_logistic(frozen_x, frozen_y, C, 3.0)
    with torch.no_grad():
        outside = probes.fit_logistic(frozen_x, frozen_y, C, 3.0)
    for got in (inside, outside):
        assert torch.equal(got[0], reference[0]) and torch.equal(got[1], reference[1])
    with pytest.raises(DataError, match=r"labels must lie in \[0, 5\)"):
        probes.fit_logistic(train_x, train_y, 5, 1.0)
    with pytest.raises(DataError, match="labels must be"):
        probes.fit_logistic(train_x, train_y[:-1], C, 1.0)


@pytest.mark.parametrize("n", [300, 20])  # primal (N >= D+1) and dual (N < D+1) forms
def test_ridge_solve_matches_normal_equations(n):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, D))
    targets = 2.0 * np.eye(C)[rng.integers(0, C, n)] - 1.0
    l2 = 7.5
    weight, bias = probes.ridge_solve(torch.from_numpy(x), torch.from_numpy(targets), l2)
    a = np.hstack([x, np.full((n, 1), 100.0)])
    w = np.linalg.solve(a.T @ a + l2 * np.eye(D + 1), a.T @ targets)
    np.testing.assert_allclose(weight.numpy(), w[:-1].T, rtol=1e-6, atol=1e-9 * np.abs(w).max())
    np.testing.assert_allclose(bias.numpy(), 100.0 * w[-1], rtol=1e-6, atol=1e-9 * np.abs(w).max())


def _big_vision_fewshot(x, y, tx, ty, shots, seed, l2):
    """big_vision's protocol re-derived in numpy: per-class permutations, whiten, pad 100, solve."""
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.where(y == c)[0]) for c in range(C)]
    idx = np.concatenate([p[:shots] for p in per_class])
    xs = x[idx]
    mean, std = xs.mean(0, keepdims=True), xs.std(0, keepdims=True) + 1e-5
    a = np.pad((xs - mean) / std, ((0, 0), (0, 1)), constant_values=100.0)
    t = 2.0 * np.eye(C)[y[idx]] - 1.0
    w = np.linalg.solve(a.T @ a + l2 * np.eye(a.shape[1]), a.T @ t)
    ta = np.pad((tx - mean) / std, ((0, 0), (0, 1)), constant_values=100.0)
    return float(((ta @ w).argmax(1) == ty).mean())


def test_ridge_fewshot_follows_big_vision(hard):
    train_x, train_y, test_x, test_y = hard
    out = probes.ridge_fewshot(train_x, train_y, test_x, test_y, C, shots=(1, 5, 25), repeats=3, seed=4)
    assert set(out) == {1, 5, 25}
    x, tx = train_x.double().numpy(), test_x.double().numpy()
    y, ty = train_y.numpy(), test_y.numpy()
    for shots, result in out.items():
        expected = [_big_vision_fewshot(x, y, tx, ty, shots, 4 + r, 2.0**10) for r in range(3)]
        assert result["accs"] == pytest.approx(expected, abs=1e-12)
        assert result["mean"] == pytest.approx(np.mean(expected))
        assert result["std"] == pytest.approx(np.std(expected))
    assert out[25]["mean"] > out[1]["mean"]  # more shots help on this data


def test_sample_shots():
    labels = torch.tensor([c for c in range(4) for _ in range(6 + c)])
    a = probes.sample_shots(labels, 3, seed=1)
    assert torch.equal(a, probes.sample_shots(labels, 3, seed=1))
    assert torch.bincount(labels[a], minlength=4).tolist() == [3, 3, 3, 3]
    assert len(set(a.tolist())) == 12
    assert not torch.equal(a, probes.sample_shots(labels, 3, seed=2))
    # for one seed the shot sets are nested, as big_vision slices one permutation per class
    five = probes.sample_shots(labels, 5, seed=1).view(4, 5)
    assert torch.equal(five[:, :3].reshape(-1), a)
    with pytest.raises(DataError, match="class 0 has 6 training examples, fewer than the 7 shots"):
        probes.sample_shots(labels, 7, seed=0)
    with pytest.raises(DataError, match="class 4 has 0 training examples"):
        probes.sample_shots(labels, 1, seed=0, n_classes=5)
    assert issubclass(DataError, Exception)


def _brute_knn(train_x, train_y, test_x, k, temperature):
    train = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    out = []
    for q in test_x:
        sims = train @ (q / np.linalg.norm(q))
        nearest = np.argsort(-sims, kind="stable")[:k]
        votes = np.zeros(C)
        for j in nearest:
            votes[train_y[j]] += np.exp(sims[j] / temperature)
        out.append(int(np.argmax(votes)))
    return np.array(out)


@pytest.mark.parametrize("k,chunk", [(20, 7), (5, 1024), (1000, 50)])
def test_knn_matches_brute_force(hard, k, chunk):
    train_x, train_y, test_x, test_y = hard
    predictions = probes.knn_classify(train_x, train_y, test_x, C, k=k, chunk=chunk)
    expected = _brute_knn(train_x.double().numpy(), train_y.numpy(), test_x.double().numpy(), k, 0.07)
    assert predictions.tolist() == expected.tolist()
    acc = probes.knn_accuracy(train_x, train_y, test_x, test_y, C, k=k, chunk=chunk)
    assert acc == pytest.approx((expected == test_y.numpy()).mean())


def test_linear_probe_clip_search(hard):
    from sklearn.linear_model import LogisticRegression

    train_x, train_y, test_x, test_y = hard
    out = probes.linear_probe(train_x, train_y, test_x, test_y, C, seed=3)
    tried = [l2 for l2, _ in out["val_curve"]]
    assert out["l2"] in tried and set(tried) <= set(probes.CLIP_GRID)
    assert {probes.CLIP_GRID[i] for i in probes.CLIP_START} <= set(tried)
    assert len(probes.CLIP_START) < len(tried) <= len(probes.CLIP_START) + 2 * len(probes.CLIP_SPANS)
    assert 1e-6 < out["l2"] < 1e6  # refined around an interior peak
    best = max(acc for _, acc in out["val_curve"])
    assert dict(out["val_curve"])[out["l2"]] == best
    assert 0.3 < out["acc1"] < 1.0 and out["acc5"] >= out["acc1"]
    assert out == probes.linear_probe(train_x, train_y, test_x, test_y, C, seed=3)
    # the final model is refit on all of train at the chosen l2: converged scikit-learn agrees on test
    sk = LogisticRegression(C=1 / out["l2"], max_iter=5000, tol=1e-10).fit(train_x.double().numpy(), train_y.numpy())
    assert abs(out["acc1"] - sk.score(test_x.double().numpy(), test_y.numpy())) <= 0.005
    from sklearn.metrics import balanced_accuracy_score

    recall = balanced_accuracy_score(test_y.numpy(), sk.predict(test_x.double().numpy()))
    assert abs(out["mean_per_class_recall"] - recall) <= 0.01


def test_linear_probe_grid_and_own_val(hard):
    train_x, train_y, test_x, test_y = hard
    grid = [1e-6, 1e-3, 1.0, 1e6]
    out = probes.linear_probe(
        train_x[:200], train_y[:200], test_x, test_y, C, grid=grid, val=(train_x[200:], train_y[200:])
    )
    assert [l2 for l2, _ in out["val_curve"]] == grid
    best = max(acc for _, acc in out["val_curve"])
    assert out["l2"] == max(l2 for l2, acc in out["val_curve"] if acc == best)  # ties: the larger l2
    assert out["l2"] not in (1e-6, 1e6)  # on this data the optimum is inside the grid
    with pytest.raises(DataError, match="grid must be"):
        probes.linear_probe(train_x, train_y, test_x, test_y, C, grid=[])
    few = probes.linear_probe(train_x[:40], train_y[:40] % 4, test_x, test_y % 4, 4, grid=[1.0])
    assert "acc5" not in few and set(few) == {"acc1", "mean_per_class_recall", "l2", "val_curve"}
