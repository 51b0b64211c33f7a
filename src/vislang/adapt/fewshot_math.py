"""Training-free and few-shot classifiers on cached CLIP features, as pure functions of tensors.

Every function takes L2-normalised features (``normalize`` first) and returns logits or the
chosen hyperparameters, so a test can check each against numbers computed by hand, and the
command can fit once per shot draw and score many test sets (the shifts of one task).

- Zero-shot: ``logits = 100 · f Wᵀ`` with W the class prototypes (the normalised mean of the
  normalised prompt embeddings, as :mod:`vislang.eval.zeroshot`).
- Tip-Adapter (Zhang et al., ECCV 2022, "Tip-Adapter: Training-free Adaption of CLIP for
  Few-shot Classification"): a cache of keys K (the NK shot features) and values L (their
  one-hot labels [NK, C]); ``A = exp(-β (1 - f Kᵀ))``, ``logits = 100 · f Wᵀ + α · A L``.
- Tip-Adapter-F: the same with K a learnable linear layer, initialised from the shot features and
  trained on the shots with AdamW and a cosine schedule (:func:`train_tip_f`).
- TIP-X (Udandarao, Gupta and Albanie, ICCV 2023, "SuS-X: Training-Free Name-Only Transfer of
  Vision-Language Models", Sec. 3.2): with support features S (M per class, labels L),
  signatures ``p = softmax(f Wᵀ)`` and ``q_i = softmax(S_i Wᵀ)`` (raw cosines, no temperature,
  as the released code), ``M_i = KL(p || q_i) = Σ_c p_c log(p_c / q_ic)``, and
  ``logits = 100 · f Wᵀ + α · exp(-β (1 - f Sᵀ)) L + γ · ψ(-M) L``, where ψ min-max rescales
  the KL row into the range of the image-image cosines ``f Sᵀ`` and negates it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vislang.errors import DataError

ZS_SCALE = 100.0  # CLIP's logit scale for zero-shot logits, as vislang.eval.zeroshot scores
# The search grids. Tip-Adapter's code searches β in [0.1, 7) and α in [0.1, 3) linearly; that
# range assumes CLIP ViT-B's zero-shot margins, so α here spans 0.1..100 log-spaced (from "the
# cache barely counts" to "the cache decides") and β 0.5..10: chosen before any test was run.
TIP_BETAS = tuple(float(b) for b in np.arange(1, 21) * 0.5)
TIP_ALPHAS = tuple(float(a) for a in np.logspace(-1, 2, 31))
TIPX_GAMMAS = TIP_ALPHAS
TIP_F_LR = 1e-3  # Tip-Adapter-F's ImageNet config: lr 1e-3, 20 epochs, batch 256, AdamW eps 1e-4
TIP_F_EPOCHS = 20
TIP_F_BATCH = 256


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Unit-length rows in float32: every method below compares by cosine."""
    return F.normalize(x.float(), dim=-1)


def class_prototypes(prompt_features: list[torch.Tensor]) -> torch.Tensor:
    """[C, D] zero-shot classifier from each class's [T_c, D] prompt embeddings: the normalised
    mean of the normalised embeddings (CLIP's prompt ensembling)."""
    if not prompt_features:
        raise DataError("class_prototypes: no classes")
    return normalize(torch.stack([normalize(p).mean(dim=0) for p in prompt_features]))


def zeroshot_logits(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """``100 · f Wᵀ``: the zero-shot logits that every method below starts from."""
    return ZS_SCALE * features @ prototypes.T


def one_hot(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Float [N, C] cache values."""
    return F.one_hot(labels.long(), n_classes).float()


def cache_affinity(features: torch.Tensor, keys: torch.Tensor, beta: float) -> torch.Tensor:
    """Tip-Adapter's ``A = exp(-β (1 - f Kᵀ))``: 1 for an identical key, decaying with distance."""
    return torch.exp(-beta * (1.0 - features @ keys.T))


def tip_logits(
    features: torch.Tensor,
    prototypes: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    alpha: float,
    beta: float,
) -> torch.Tensor:
    """Tip-Adapter: zero-shot logits plus α times the affinity-weighted cache labels."""
    return zeroshot_logits(features, prototypes) + alpha * cache_affinity(features, keys, beta) @ values


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy (argmax: the lowest class index wins an exact tie)."""
    return (logits.argmax(dim=-1) == labels.to(logits.device)).double().mean().item()


def _grid_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Accuracy of every leading index of [..., N, C] logits."""
    return (logits.argmax(dim=-1) == labels).double().mean(dim=-1)


@dataclass(frozen=True)
class TipChoice:
    """The hyperparameters a validation search chose and their validation accuracy."""

    alpha: float
    beta: float
    val_acc: float
    gamma: float = 0.0


def search_tip(
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    prototypes: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    alphas: tuple[float, ...] = TIP_ALPHAS,
    betas: tuple[float, ...] = TIP_BETAS,
) -> TipChoice:
    """α and β maximising validation accuracy over the grid (Tip-Adapter's search). An exact tie
    goes to the smaller α (the model nearer zero-shot), then the smaller β."""
    _check_val(val_x, val_y, "search_tip")
    zs = zeroshot_logits(val_x, prototypes)
    a_list, b = sorted(alphas), sorted(betas)
    a = torch.tensor(a_list, dtype=zs.dtype, device=zs.device)
    cache = torch.stack([cache_affinity(val_x, keys, beta) @ values for beta in b])  # [B, N, C]
    scores = _grid_accuracy(zs + a[:, None, None, None] * cache[None], val_y.to(zs.device))  # [A, B]
    i, j = divmod(int(scores.flatten().argmax()), len(b))
    return TipChoice(float(a_list[i]), float(b[j]), float(scores[i, j]))


def _check_val(x: torch.Tensor, y: torch.Tensor, name: str) -> None:
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise DataError(f"{name}: need validation features [N, D] and labels [N], N > 0; got "
                        f"{tuple(x.shape)} and {tuple(y.shape)}")  # fmt: skip


@dataclass(frozen=True)
class TipFResult:
    """Trained cache keys, the epoch (1-based) whose keys were kept, its validation accuracy."""

    keys: torch.Tensor
    epoch: int
    val_acc: float


def train_tip_f(
    keys: torch.Tensor,
    labels: torch.Tensor,
    prototypes: torch.Tensor,
    choice: TipChoice,
    val: tuple[torch.Tensor, torch.Tensor],
    epochs: int = TIP_F_EPOCHS,
    lr: float = TIP_F_LR,
    seed: int = 0,
    leave_one_out: bool = True,
) -> TipFResult:
    """Tip-Adapter-F: the cache keys as a linear layer (initialised from the shot features)
    trained with cross-entropy on Tip-Adapter's logits of the shots themselves, AdamW (eps 1e-4)
    with a cosine schedule over every step, shuffled batches of 256, α and β fixed at ``choice``.

    The paper trains on augmented images; here the shots are cached features, so a shot would
    meet its own key at affinity exactly 1 and learn little. With ``leave_one_out`` each shot's
    own key is masked out of its training logits, standing in for the augmentation. The keys
    of the epoch with the best validation accuracy are kept (the paper's code picks the epoch on
    the test set; here on validation)."""
    if epochs < 1:
        raise DataError(f"train_tip_f: epochs must be >= 1, got {epochs}")
    values = one_hot(labels, prototypes.shape[0])
    with torch.inference_mode(False), torch.enable_grad():
        return _train_keys(keys.clone(), labels.clone().long(), values, prototypes.clone(), choice, val, epochs, lr,
                           seed, leave_one_out)  # fmt: skip


def _train_keys(keys, labels, values, prototypes, choice, val, epochs, lr, seed, leave_one_out) -> TipFResult:
    weight = torch.nn.Parameter(keys.clone())
    optimizer = torch.optim.AdamW([weight], lr=lr, eps=1e-4)
    n = keys.shape[0]
    steps_per_epoch = -(-n // TIP_F_BATCH)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    zs = zeroshot_logits(keys, prototypes)
    best = TipFResult(keys, 0, -1.0)
    for epoch in range(1, epochs + 1):
        for batch in torch.randperm(n, generator=generator).split(TIP_F_BATCH):
            affinity = torch.exp(-choice.beta * (1.0 - keys[batch] @ weight.T))
            if leave_one_out:
                affinity = affinity * (torch.arange(n)[None, :] != batch[:, None]).to(affinity)
            logits = zs[batch] + choice.alpha * affinity @ values
            loss = F.cross_entropy(logits, labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        trained = weight.detach().clone()
        val_acc = accuracy(tip_logits(val[0], prototypes, trained, values, choice.alpha, choice.beta), val[1])
        if val_acc > best.val_acc:
            best = TipFResult(trained, epoch, val_acc)
    return best


def signatures(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """TIP-X's signature of each image: softmax over classes of its raw cosines with the prototypes."""
    return torch.softmax(features @ prototypes.T, dim=-1)


def kl_matrix(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """[N, M] with entry (n, m) = KL(p_n || q_m) = Σ_c p_nc (log p_nc - log q_mc), in float64."""
    p, q = p.double(), q.double()
    return (p * p.log()).sum(dim=1, keepdim=True) - p @ q.log().T


def rescale_rows(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each row of ``x`` min-max mapped onto the range of the same row of ``target`` (a constant
    row goes to the target's minimum). Per row, unlike the released code's one min and max over
    the whole test batch, so that an image's logits do not depend on the other test images."""
    x, target = x.double(), target.double()
    low, high = x.min(dim=1, keepdim=True).values, x.max(dim=1, keepdim=True).values
    t_low, t_high = target.min(dim=1, keepdim=True).values, target.max(dim=1, keepdim=True).values
    span = high - low
    unit = torch.where(span > 0, (x - low) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(x))
    return unit * (t_high - t_low) + t_low


def tipx_kl_logits(
    features: torch.Tensor, prototypes: torch.Tensor, support: torch.Tensor, values: torch.Tensor
) -> torch.Tensor:
    """TIP-X's ``ψ(-M) L``: support labels weighted by the negated, rescaled KL divergence of the
    signatures (a support image whose class profile matches the test image's weighs most)."""
    kl = kl_matrix(signatures(features, prototypes), signatures(support, prototypes))
    weights = -rescale_rows(kl, features @ support.T)
    return (weights @ values.double()).float()


def tipx_logits(
    features: torch.Tensor,
    prototypes: torch.Tensor,
    support: torch.Tensor,
    values: torch.Tensor,
    choice: TipChoice,
) -> torch.Tensor:
    """TIP-X: zero-shot + α · Tip-Adapter's affinity term + γ · the KL term, on the support set."""
    cache = cache_affinity(features, support, choice.beta) @ values
    kl = tipx_kl_logits(features, prototypes, support, values)
    return zeroshot_logits(features, prototypes) + choice.alpha * cache + choice.gamma * kl


def search_tipx(
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    prototypes: torch.Tensor,
    support: torch.Tensor,
    values: torch.Tensor,
    alphas: tuple[float, ...] = TIP_ALPHAS,
    betas: tuple[float, ...] = TIP_BETAS,
    gammas: tuple[float, ...] = TIPX_GAMMAS,
) -> TipChoice:
    """α, β, γ maximising validation accuracy over the grid; ties to the smaller α, then γ, then β."""
    _check_val(val_x, val_y, "search_tipx")
    zs = zeroshot_logits(val_x, prototypes)
    kl = tipx_kl_logits(val_x, prototypes, support, values)
    a_list, g_list, b = sorted(alphas), sorted(gammas), sorted(betas)
    a, g = torch.tensor(a_list, dtype=zs.dtype), torch.tensor(g_list, dtype=zs.dtype)
    labels = val_y.to(zs.device)
    scores = torch.empty(len(a), len(g), len(b), dtype=torch.float64)
    for k, beta in enumerate(b):
        cache = cache_affinity(val_x, support, beta) @ values
        logits = zs + a[:, None, None, None] * cache + g[None, :, None, None] * kl  # [A, G, N, C]
        scores[:, :, k] = _grid_accuracy(logits, labels)
    i, rest = divmod(int(scores.flatten().argmax()), len(g) * len(b))
    j, k = divmod(rest, len(b))
    return TipChoice(float(a_list[i]), float(b[k]), float(scores[i, j, k]), float(g_list[j]))


def retrieve_support(pool: torch.Tensor, prototypes: torch.Tensor, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SuS-X's support set without labels: for every class the ``per_class`` pool images most
    cosine-similar to its text prototype (classes draw independently, so an image may serve two).
    Returns pool indices [C · M] in class order and the class each was retrieved for."""
    if per_class < 1:
        raise DataError(f"retrieve_support: per_class must be >= 1, got {per_class}")
    if pool.shape[0] < per_class:
        raise DataError(f"retrieve_support: the pool has {pool.shape[0]} images, fewer than {per_class} per class")
    nearest = (prototypes @ pool.T).topk(per_class, dim=1).indices  # [C, M]
    labels = torch.arange(prototypes.shape[0]).repeat_interleave(per_class)
    return nearest.flatten(), labels
