"""With ``group=``, the mean of per-rank losses equals the global-batch loss and the per-rank
feature gradients, averaged as DDP averages them, equal the global-batch gradients (3-process gloo),
for the gathered losses and SigLIP's ring. Hard-negative texts may be spread unevenly over the
ranks (2, 1 and none)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from vislang.losses import clip_loss, siglip_loss

WORLD, LOCAL_B, DIM = 3, 4, 8
NEGATIVE_ROWS = [slice(0, 2), slice(2, 3), slice(3, 3)]  # per rank


def _global_features():
    g = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(WORLD * LOCAL_B, DIM, generator=g, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(WORLD * LOCAL_B, DIM, generator=g, dtype=torch.float64), dim=-1)
    negatives = F.normalize(torch.randn(3, DIM, generator=g, dtype=torch.float64), dim=-1)
    return image, text, negatives


def _losses(image, text, negatives, group=None):
    return {
        "clip": clip_loss(image, text, 10.0, group=group),
        "siglip": siglip_loss(image, text, 10.0, -5.0, group=group),
        "clip_neg": clip_loss(image, text, 10.0, text_negatives=negatives, group=group),
        "siglip_neg": siglip_loss(image, text, 10.0, -5.0, text_negatives=negatives, group=group),
        "siglip_ring": siglip_loss(image, text, 10.0, -5.0, group=group, ring=True),
        "siglip_ring_neg": siglip_loss(image, text, 10.0, -5.0, text_negatives=negatives, group=group, ring=True),
        # chunks of 5 texts straddle the ranks' blocks; chunks of 3 split each ring block unevenly
        "siglip_chunk_neg": siglip_loss(image, text, 10.0, -5.0, text_negatives=negatives, group=group, chunk=5),
        "siglip_ring_chunk_neg": siglip_loss(
            image, text, 10.0, -5.0, text_negatives=negatives, group=group, ring=True, chunk=3
        ),
    }


def _worker(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    image, text, negatives = _global_features()
    rows = slice(rank * LOCAL_B, (rank + 1) * LOCAL_B)
    results = {}
    for name in _losses(*_global_features()):
        local_image = image[rows].clone().requires_grad_()
        local_text = text[rows].clone().requires_grad_()
        local_negatives = negatives[NEGATIVE_ROWS[rank]].clone().requires_grad_()
        loss = _losses(local_image, local_text, local_negatives, group=dist.group.WORLD)[name]
        loss.backward()
        negative_grad = local_negatives.grad if local_negatives.grad is not None else torch.zeros_like(local_negatives)
        results[name] = (loss.detach(), local_image.grad / WORLD, local_text.grad / WORLD, negative_grad / WORLD)
    torch.save(results, f"{out}.{rank}")
    dist.barrier()
    dist.destroy_process_group()


def test_group_losses_equal_global_batch(tmp_path):
    out = str(tmp_path / "result")
    mp.spawn(_worker, args=(str(tmp_path / "store"), out), nprocs=WORLD, join=True)
    per_rank = [torch.load(f"{out}.{r}") for r in range(WORLD)]
    image, text, negatives = _global_features()
    for tensor in (image, text, negatives):
        tensor.requires_grad_()
    for name, loss in _losses(image, text, negatives).items():
        grad_image, grad_text, grad_negatives = torch.autograd.grad(loss, (image, text, negatives), allow_unused=True)
        mean_loss = sum(r[name][0] for r in per_rank) / WORLD
        torch.testing.assert_close(mean_loss, loss.detach())
        torch.testing.assert_close(torch.cat([r[name][1] for r in per_rank]), grad_image)
        torch.testing.assert_close(torch.cat([r[name][2] for r in per_rank]), grad_text)
        if name.endswith("_neg"):
            torch.testing.assert_close(torch.cat([r[name][3] for r in per_rank]), grad_negatives)
