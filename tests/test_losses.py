"""Losses against direct formula implementations and against OpenCLIP's ClipLoss / SigLipLoss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vislang.losses import clip_loss, siglip_loss


def _features(n: int = 8, d: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1).requires_grad_()
    text = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1).requires_grad_()
    return image, text


def clip_reference(image, text, scale, smoothing=0.0):
    """InfoNCE written out element by element."""
    n = image.shape[0]
    total = 0.0
    for direction in (0, 1):
        a, b = (image, text) if direction == 0 else (text, image)
        for i in range(n):
            logits = [scale * torch.dot(a[i], b[j]) for j in range(n)]
            log_z = torch.logsumexp(torch.stack(logits), dim=0)
            nll = [log_z - logits[j] for j in range(n)]
            target = [(1 - smoothing) * (j == i) + smoothing / n for j in range(n)]
            total = total + sum(t * loss for t, loss in zip(target, nll)) / n
    return total / 2


def siglip_reference(image, text, scale, bias):
    n = image.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(text.shape[0]):  # texts beyond the n pairs are negatives for every image
            z = 1.0 if i == j else -1.0
            total = total - torch.log(torch.sigmoid(z * (scale * torch.dot(image[i], text[j]) + bias)))
    return total / n


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_clip_loss_matches_formula(smoothing):
    image, text = _features()
    ours = clip_loss(image, text, 10.0, label_smoothing=smoothing).double()
    ref = clip_reference(image, text, 10.0, smoothing)
    g_ours = torch.autograd.grad(ours, (image, text))
    g_ref = torch.autograd.grad(ref, (image, text))
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_clip_loss_perfect_alignment_is_small():
    image, _ = _features()
    assert clip_loss(image, image, 100.0).item() < 1e-3
    assert clip_loss(image, image.roll(1, dims=0), 100.0).item() > 1.0


def test_siglip_loss_matches_formula():
    image, text = _features()
    ours = siglip_loss(image, text, 10.0, -10.0).double()
    ref = siglip_reference(image, text, 10.0, -10.0)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    for a, b in zip(torch.autograd.grad(ours, (image, text)), torch.autograd.grad(ref, (image, text))):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("chunk", [1, 3, 8, 100])
def test_siglip_chunked_equals_formula_and_holds_fewer_logits(chunk):
    image, text = _features(n=8)
    negatives = F.normalize(torch.randn(5, 16, dtype=torch.float64), dim=-1).requires_grad_()
    saved = []

    def pack(tensor):
        saved.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        ours = siglip_loss(image, text, 10.0, -10.0, text_negatives=negatives, chunk=chunk)
    ref = siglip_reference(image, torch.cat([text, negatives]), 10.0, -10.0)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-10)
    inputs = (image, text, negatives)
    for a, b in zip(torch.autograd.grad(ours, inputs), torch.autograd.grad(ref, inputs)):
        torch.testing.assert_close(a, b)
    # Only the features are kept for the backward pass, never a block of logits.
    if chunk < 8:
        assert max(saved) <= max(image.numel(), text.numel())


def test_siglip_at_init_is_dominated_by_negatives():
    # With t=10, b=-10 every logit is near -10: log σ(-z) ≈ 0 for negatives, ≈ -10 for the B positives.
    image, text = _features(n=32)
    assert siglip_loss(image, text, 10.0, -10.0).item() == pytest.approx(10.0, abs=1.5)


def test_against_open_clip():
    open_clip_loss = pytest.importorskip("open_clip.loss")
    image, text = _features(n=12, d=24, seed=3)
    image, text = image.float().detach().requires_grad_(), text.float().detach().requires_grad_()
    scale = torch.tensor(math.log(1 / 0.07)).exp()

    ours = clip_loss(image, text, scale)
    theirs = open_clip_loss.ClipLoss()(image, text, scale)
    torch.testing.assert_close(ours, theirs)
    for a, b in zip(torch.autograd.grad(ours, (image, text)), torch.autograd.grad(theirs, (image, text))):
        torch.testing.assert_close(a, b)

    ours = siglip_loss(image, text, torch.tensor(10.0), torch.tensor(-10.0))
    theirs = open_clip_loss.SigLipLoss()(image, text, torch.tensor(10.0), torch.tensor(-10.0))
    torch.testing.assert_close(ours, theirs)
    for a, b in zip(torch.autograd.grad(ours, (image, text)), torch.autograd.grad(theirs, (image, text))):
        torch.testing.assert_close(a, b)


def test_losses_are_fp32_under_bf16_features():
    image, text = _features()
    loss = clip_loss(image.detach().bfloat16(), text.detach().bfloat16(), 10.0)
    assert loss.dtype == torch.float32
