"""Probes on frozen features: the three standard ways to ask how linearly usable a representation is.

- ``linear_probe``: CLIP's protocol (Radford et al. 2021, appendix A.3). Multinomial logistic
  regression fitted by L-BFGS (at most 1,000 iterations) on the raw features, no standardisation;
  the L2 strength is chosen on a validation split (the dataset's own, or one carved from train)
  by CLIP's parametric binary search over 97 log-spaced values from 1e-6 to 1e6; the final model
  is refitted at that strength on train + validation and scored on test.
- ``ridge_fewshot``: big_vision's few-shot linear evaluator (``evaluators/fewshot_lsr.py``):
  k shots per class, features standardised with the shots' own statistics, a constant feature
  of 100 standing in for the (barely regularised) bias, targets one-hot in {-1, +1}, a closed-form
  ridge solve at one fixed L2 strength (its configs use 2**10), one accuracy per seed.
- ``knn_classify``: DINO's weighted k-NN: cosine similarity, the k nearest training points vote
  for their class with weight exp(similarity / T), the class with the largest total wins.

Everything is a pure function of tensors (and a seed), so an evaluator can run any of them on
cached features and a test can compare each against an independent implementation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vislang.errors import DataError
from vislang.eval.metrics import classification_metrics

BIAS_CONSTANT = 100.0  # big_vision: a constant feature this large makes the bias almost unregularised
FEWSHOT_L2 = 2.0**10  # big_vision's configs/common_fewshot.py
STD_EPS = 1e-5  # big_vision adds this to the shots' standard deviation
CLIP_GRID = np.logspace(-6, 6, 97).tolist()  # 8 steps per decade
CLIP_START = list(range(0, 97, 16))  # 1e-6, 1e-4, ..., 1e6
CLIP_SPANS = (8, 4, 2, 1)  # the interval around the peak is halved until one grid step


def _check(x: torch.Tensor, y: torch.Tensor, n_classes: int, name: str) -> None:
    """Bad features or labels fail as one line naming the argument, before any solver runs."""
    if x.ndim != 2:
        raise DataError(f"{name}: features must be [N, D], got shape {tuple(x.shape)}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DataError(f"{name}: labels must be [N] with N={x.shape[0]}, got shape {tuple(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise DataError(f"{name}: labels must lie in [0, {n_classes}), got {int(y.min())}..{int(y.max())}")


def _logistic_objective(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, l2: float):
    """Mean cross-entropy + l2 / (2N) ||W||^2: scikit-learn's scaling of the same minimiser (the
    sum form divided by N), which keeps gradient tolerances independent of the dataset size."""
    logits = x @ weight.T + bias
    return torch.nn.functional.cross_entropy(logits, y) + 0.5 * l2 / x.shape[0] * weight.square().sum()


def fit_logistic(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float, max_iter: int = 1000, tol: float = 1e-7
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression minimising sum_i CE(W x_i + b, y_i) + l2/2 ||W||^2.

    This is scikit-learn's ``LogisticRegression(C=1/l2)`` objective with lbfgs: every class has its
    own row (also for two classes), the intercept is not penalised. L-BFGS with a strong-Wolfe line
    search, history 10 as scipy's, in float64 from zeros, so it is deterministic; it stops after
    ``max_iter`` iterations or when the largest gradient entry of the mean-scaled objective is
    below ``tol``. The bias gradient sums to zero over classes, so the bias stays centred.
    Returns float64 ``weight [C, D]`` and ``bias [C]`` on the features' device."""
    _check(x, y, n_classes, "fit_logistic")
    if l2 < 0:
        raise DataError(f"fit_logistic: l2 must be >= 0, got {l2}")
    # an evaluator may hold features made under inference_mode or call this under no_grad
    with torch.inference_mode(False), torch.enable_grad():
        return _lbfgs(x.double().clone(), y.long().to(x.device).clone(), n_classes, l2, max_iter, tol)


def _lbfgs(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float, max_iter: int, tol: float):
    weight = torch.zeros(n_classes, x.shape[1], dtype=torch.float64, device=x.device, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, device=x.device, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        max_eval=max_iter * 3,
        tolerance_grad=tol,
        tolerance_change=1e-14,
        history_size=10,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = _logistic_objective(x, y, weight, bias, l2)
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def logistic_loss(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, l2: float) -> float:
    """The un-scaled objective sum CE + l2/2 ||W||^2 of a fitted model, to compare solvers."""
    x, y = x.double(), y.long().to(x.device)
    with torch.no_grad():
        return _logistic_objective(x, y, weight.double(), bias.double(), l2).item() * x.shape[0]


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return (logits.argmax(dim=1) == y.to(logits.device)).double().mean().item()


def _split(y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A stratified, seeded train/validation split: each class gives ``round(fraction * n)`` of
    its examples to validation (keeping at least one for training), so rare classes appear in both."""
    rng = np.random.default_rng(seed)
    labels = y.cpu().numpy()
    train, val = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_val = min(int(round(fraction * len(members))), len(members) - 1)
        val.append(members[:n_val])
        train.append(members[n_val:])
    return torch.from_numpy(np.sort(np.concatenate(train))), torch.from_numpy(np.sort(np.concatenate(val)))


def _val_accuracy(fit: tuple, val_x: torch.Tensor, val_y: torch.Tensor) -> float:
    weight, bias = fit
    return _accuracy(val_x.double().to(weight.device) @ weight.T + bias, val_y)


def _sweep(train: tuple, val: tuple, n_classes: int, grid: Sequence[float] | None, max_iter: int):
    """Validation accuracy per tried l2 and the chosen l2. Without a grid: CLIP's search (start
    every 16 grid steps, then the peak's neighbours at 8, 4, 2, 1 steps); with one: all of it.
    Ties go to the larger l2 (the more regularised model)."""
    values = CLIP_GRID if grid is None else sorted(float(v) for v in grid)
    scores: dict[int, float] = {}

    def score(indices) -> int:
        for i in indices:
            if i not in scores:
                scores[i] = _val_accuracy(fit_logistic(*train, n_classes, values[i], max_iter), *val)
        return max(indices, key=lambda i: (scores[i], i))

    if grid is None:
        peak = score(CLIP_START)
        for span in CLIP_SPANS:
            peak = score(sorted({max(peak - span, 0), peak, min(peak + span, len(values) - 1)}))
    else:
        peak = score(range(len(values)))
    return [(values[i], scores[i]) for i in sorted(scores)], values[peak]


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    n_classes: int,
    seed: int = 0,
    val_fraction: float = 0.2,
    grid: Sequence[float] | None = None,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    max_iter: int = 1000,
) -> dict:
    """CLIP's linear probe: choose l2 on validation, refit on train + validation, score on test.

    ``val`` is the dataset's own validation split; without one, a stratified ``val_fraction`` of
    train (seeded) is held out for the sweep and the final model uses all of train. Returns
    ``acc1``, ``acc5`` (five classes or more), ``mean_per_class_recall`` (scikit-learn's balanced
    accuracy), the chosen ``l2`` and ``val_curve``: ``(l2, val_acc)`` for every l2 tried."""
    _check(train_x, train_y, n_classes, "linear_probe train")
    _check(test_x, test_y, n_classes, "linear_probe test")
    train_y = train_y.to(train_x.device)
    if grid is not None and (not len(grid) or min(grid) < 0):
        raise DataError(f"linear_probe: grid must be a non-empty list of l2 values >= 0, got {list(grid)}")
    if val is None:
        if not 0 < val_fraction < 1:
            raise DataError(f"linear_probe: val_fraction must lie in (0, 1), got {val_fraction}")
        fit_idx, val_idx = _split(train_y, val_fraction, seed)
        if not len(val_idx):
            raise DataError("linear_probe: the training set is too small to hold out a validation split")
        fit_idx, val_idx = fit_idx.to(train_x.device), val_idx.to(train_x.device)
        sweep_train, sweep_val = (train_x[fit_idx], train_y[fit_idx]), (train_x[val_idx], train_y[val_idx])
        final_x, final_y = train_x, train_y
    else:
        _check(val[0], val[1], n_classes, "linear_probe val")
        sweep_train, sweep_val = (train_x, train_y), val
        final_x = torch.cat([train_x, val[0].to(train_x)])
        final_y = torch.cat([train_y, val[1].to(train_y)])
    curve, best = _sweep(sweep_train, sweep_val, n_classes, grid, max_iter)
    weight, bias = fit_logistic(final_x, final_y, n_classes, best, max_iter)
    logits = test_x.double().to(weight.device) @ weight.T + bias
    ks = (1, 5) if n_classes >= 5 else (1,)
    metrics = classification_metrics(logits, test_y.long(), ks=ks)
    out = {f"acc{k}": metrics[f"top{k}"] for k in ks}
    return out | {"mean_per_class_recall": metrics["mean_per_class_recall"], "l2": best, "val_curve": curve}


def sample_shots(labels: torch.Tensor, shots: int, seed: int, n_classes: int | None = None) -> torch.Tensor:
    """Indices of ``shots`` examples of every class 0..n_classes-1, drawn as big_vision draws
    them: ``numpy.random.default_rng(seed)`` permutes each class's indices in class order and the
    first ``shots`` are kept, so for one seed a smaller shot set is a prefix of a larger one.
    A class with fewer than ``shots`` examples is an error (big_vision would silently use fewer)."""
    if shots < 1:
        raise DataError(f"sample_shots: shots must be >= 1, got {shots}")
    values = labels.cpu().numpy()
    n_classes = int(values.max()) + 1 if n_classes is None else n_classes
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(n_classes):
        members = rng.permutation(np.flatnonzero(values == c))
        if len(members) < shots:
            raise DataError(f"class {c} has {len(members)} training examples, fewer than the {shots} shots asked for")
        chosen.append(members[:shots])
    return torch.from_numpy(np.concatenate(chosen)).long()


def ridge_solve(x: torch.Tensor, targets: torch.Tensor, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form ridge regression with big_vision's bias: a constant feature ``BIAS_CONSTANT``
    is appended and regularised like the rest, so the bias is almost free. Solves
    (A^T A + l2 I) w = A^T Y with A = [x, 100], or its dual A^T (A A^T + l2 I)^-1 Y when there are
    fewer points than columns (the same w, a smaller system). Float64; returns ``weight [C, D]``
    and ``bias [C]`` such that predictions are ``x @ weight.T + bias``."""
    if x.ndim != 2 or targets.ndim != 2 or targets.shape[0] != x.shape[0]:
        raise DataError(f"ridge_solve: need x [N, D] and targets [N, C], got {tuple(x.shape)}, {tuple(targets.shape)}")
    a = torch.cat([x.double(), torch.full((x.shape[0], 1), BIAS_CONSTANT, dtype=torch.float64, device=x.device)], 1)
    y = targets.double().to(x.device)
    n, d = a.shape
    if n >= d:
        w = torch.linalg.solve(a.T @ a + l2 * torch.eye(d, dtype=a.dtype, device=a.device), a.T @ y)
    else:
        w = a.T @ torch.linalg.solve(a @ a.T + l2 * torch.eye(n, dtype=a.dtype, device=a.device), y)
    return w[:-1].T.contiguous(), w[-1] * BIAS_CONSTANT


def _fewshot_accuracy(train: tuple, test: tuple, n_classes: int, l2: float) -> float:
    """One big_vision few-shot run: standardise with the shots' statistics, solve, score argmax."""
    x, y = train[0].double(), train[1].long().to(train[0].device)
    mean, std = x.mean(dim=0), x.std(dim=0, correction=0) + STD_EPS
    targets = 2.0 * torch.nn.functional.one_hot(y, n_classes).double() - 1.0
    weight, bias = ridge_solve((x - mean) / std, targets, l2)
    test_x = (test[0].double().to(x.device) - mean) / std
    return _accuracy(test_x @ weight.T + bias, test[1])


def ridge_fewshot(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    n_classes: int,
    shots: Sequence[int] = (1, 5, 10, 25),
    repeats: int = 3,
    seed: int = 0,
    l2: float = FEWSHOT_L2,
) -> dict[int, dict]:
    """big_vision's few-shot linear evaluation: for each of ``repeats`` seeds (seed, seed+1, ...,
    as big_vision's seeds 0..num_seeds-1; it uses 3) and each shot count, sample the shots, fit
    the ridge classifier at the fixed ``l2``, and score top-1 on test. Returns, per shot count,
    ``mean``, ``std`` (over seeds, population) and the per-seed ``accs``."""
    _check(train_x, train_y, n_classes, "ridge_fewshot train")
    _check(test_x, test_y, n_classes, "ridge_fewshot test")
    if repeats < 1:
        raise DataError(f"ridge_fewshot: repeats must be >= 1, got {repeats}")
    train_y = train_y.to(train_x.device)
    out = {}
    for k in shots:
        accs = []
        for r in range(repeats):
            idx = sample_shots(train_y, k, seed + r, n_classes).to(train_x.device)
            accs.append(_fewshot_accuracy((train_x[idx], train_y[idx]), (test_x, test_y), n_classes, l2))
        out[int(k)] = {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "accs": accs}
    return out


def knn_classify(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    n_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> torch.Tensor:
    """DINO's weighted k-NN: on L2-normalised features, each test point's ``k`` most cosine-similar
    training points vote for their labels with weight exp(sim / temperature); predictions [N] are
    the classes with the largest summed vote (the lowest class index on an exact tie). Test points
    go ``chunk`` at a time, so memory is O(chunk x N_train)."""
    _check(train_x, train_y, n_classes, "knn_classify train")
    if test_x.ndim != 2 or test_x.shape[1] != train_x.shape[1]:
        raise DataError(f"knn_classify: test features must be [N, {train_x.shape[1]}], got {tuple(test_x.shape)}")
    if train_x.shape[0] == 0:
        raise DataError("knn_classify: no training points")
    train = torch.nn.functional.normalize(train_x.float(), dim=1)
    labels = train_y.long().to(train.device)
    k = min(k, train.shape[0])
    predictions = []
    for start in range(0, test_x.shape[0], chunk):
        query = torch.nn.functional.normalize(test_x[start : start + chunk].float().to(train.device), dim=1)
        sims, neighbours = (query @ train.T).topk(k, dim=1)
        # a one-hot product, not scatter_add: atomic adds on a GPU would make ties order-dependent
        one_hot = torch.nn.functional.one_hot(labels[neighbours], n_classes).float()
        votes = (one_hot * (sims / temperature).exp()[..., None]).sum(dim=1)
        predictions.append(votes.argmax(dim=1))
    if not predictions:
        return torch.zeros(0, dtype=torch.long, device=train.device)
    return torch.cat(predictions)


def knn_accuracy(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    n_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> float:
    """Top-1 accuracy of ``knn_classify`` against ``test_y``."""
    predictions = knn_classify(train_x, train_y, test_x, n_classes, k, temperature, chunk)
    return (predictions == test_y.long().to(predictions.device)).double().mean().item()
