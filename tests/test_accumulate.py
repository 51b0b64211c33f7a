"""Micro-batch accumulation: CLIP and SigLIP (with hard-negative texts) accumulate exactly, as if
the whole batch had passed at once (GradCache); captioners accumulate plainly, which is exact
when every caption has the same length. FLIP's unmasked tuning switches at its step."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch

from vislang.experiment import build_config, build_objective
from vislang.train.accumulate import backward, split_batch
from vislang.train.loop import train

VOCAB, PAD = 50, 0


def objective_and_batch(name: str, overrides: list[str], n: int = 12):
    cfg = build_config(
        {},
        overrides
        + [
            f"objective={name}",
            "model.vision.stem=patch",  # no BatchNorm: samples interact only through the loss
            *(["model.init_logit_scale=10", "model.init_logit_bias=-10"] if name == "siglip" else []),
        ],
    )
    torch.manual_seed(0)
    objective = build_objective(cfg, VOCAB, PAD).double()
    g = torch.Generator().manual_seed(1)
    size, length = cfg.model.vision.image_size, cfg.model.text.context_length
    text = torch.randint(3, VOCAB, (n, length), generator=g)
    text[:, 0], text[:, 8], text[:, 9:] = 1, 2, PAD  # start, end, padding: every caption 9 tokens
    batch = {"image": torch.randn(n, 3, size, size, generator=g, dtype=torch.float64), "text": text}
    if name != "cap":
        batch["text_neg"] = torch.randint(3, VOCAB, (n, length), generator=g)
        batch["text_neg"][:, 9:] = PAD
        batch["text_neg_valid"] = torch.arange(n) % 3 != 0
    return objective, batch


def gradients(objective, batch, accum: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    objective.zero_grad(set_to_none=True)
    parts = backward(objective, batch, accum, contextlib.nullcontext)
    grads = {n: p.grad.clone() for n, p in objective.named_parameters() if p.grad is not None}
    return parts["loss"], grads


@pytest.mark.parametrize("name,accum", [("clip", 4), ("siglip", 3), ("cap", 4), ("clip", 5)])
def test_accumulation_equals_the_whole_batch(name, accum, tiny_overrides):
    objective, batch = objective_and_batch(name, tiny_overrides)
    assert objective.exact_accumulation == (name != "cap")
    whole_loss, whole = gradients(objective, batch, 1)
    loss, accumulated = gradients(objective, batch, accum)
    assert torch.allclose(loss, whole_loss, rtol=1e-10, atol=1e-12)
    assert whole.keys() == accumulated.keys() and len(whole) > 10
    for key in whole:
        assert torch.allclose(accumulated[key], whole[key], rtol=1e-8, atol=1e-12), key


def test_split_batch_keeps_rows_together():
    batch = {"image": torch.arange(10), "text": torch.arange(10) * 2}
    parts = split_batch(batch, 4)
    assert [len(p["image"]) for p in parts] == [3, 3, 2, 2]
    assert torch.equal(torch.cat([p["text"] for p in parts]), batch["text"])
    assert len(split_batch({"image": torch.arange(2), "text": torch.arange(2)}, 4)) == 2


def test_masked_micro_batches_are_recomputed_with_their_own_masks(tiny_overrides):
    """With FLIP masking the recomputation replays the random state, so the cached embeddings
    and the recomputed ones agree: the accumulated gradient then equals a whole-batch gradient
    taken with the same masks."""
    objective, batch = objective_and_batch("clip", tiny_overrides + ["model.vision.mask_ratio=0.5"])
    torch.manual_seed(5)
    _, accumulated = gradients(objective, batch, 2)
    # the same masks, whole batch: replay the two micro-batches' random draws in one forward
    torch.manual_seed(5)
    micro = split_batch(batch, 2)
    objective.zero_grad(set_to_none=True)
    embeddings = [objective.embed(m) for m in micro]
    joined = {k: torch.cat([e[k] for e in embeddings]) for k in embeddings[0]}
    objective.loss_from_embeddings(joined)["loss"].backward()
    for name, p in objective.named_parameters():
        if p.grad is not None:
            assert torch.allclose(accumulated[name], p.grad, rtol=1e-8, atol=1e-12), name


def test_unmasked_tuning_switches_at_its_step(tmp_path, tiny_overrides):
    cfg = build_config(
        {},
        tiny_overrides
        + [
            "model.vision.mask_ratio=0.5",
            "train.unmasked_tuning=0.25",  # the last 3 of 12 steps
            "train.log_every=1",
            "train.accum_steps=2",
            "eval.tasks=[{type: zeroshot, n: 40}]",
        ],
    )
    train(cfg, tmp_path / "run", quiet=True)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    ratios = {r["step"]: r["train/mask_ratio"] for r in records if "train/mask_ratio" in r}
    assert ratios == {step: 0.5 if step <= 9 else 0.0 for step in range(1, 13)}
