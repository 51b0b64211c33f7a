"""With ``group=``, the mean of per-rank losses equals the global-batch loss and the per-rank
feature gradients, averaged as DDP averages them, equal the global-batch gradients (2-process gloo)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from vislang.losses import clip_loss, siglip_loss

WORLD, LOCAL_B, DIM = 2, 4, 8


def _global_features():
    g = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(WORLD * LOCAL_B, DIM, generator=g, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(WORLD * LOCAL_B, DIM, generator=g, dtype=torch.float64), dim=-1)
    return image, text


def _losses(image, text, group=None):
    return {
        "clip": clip_loss(image, text, 10.0, group=group),
        "siglip": siglip_loss(image, text, 10.0, -5.0, group=group),
    }


def _worker(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    image, text = _global_features()
    rows = slice(rank * LOCAL_B, (rank + 1) * LOCAL_B)
    results = {}
    for name in ("clip", "siglip"):
        local_image = image[rows].clone().requires_grad_()
        local_text = text[rows].clone().requires_grad_()
        loss = _losses(local_image, local_text, group=dist.group.WORLD)[name]
        loss.backward()
        results[name] = (loss.detach(), local_image.grad / WORLD, local_text.grad / WORLD)
    torch.save(results, f"{out}.{rank}")
    dist.barrier()
    dist.destroy_process_group()


def test_group_losses_equal_global_batch(tmp_path):
    out = str(tmp_path / "result")
    mp.spawn(_worker, args=(str(tmp_path / "store"), out), nprocs=WORLD, join=True)
    per_rank = [torch.load(f"{out}.{r}") for r in range(WORLD)]
    image, text = _global_features()
    image.requires_grad_()
    text.requires_grad_()
    for name, loss in _losses(image, text).items():
        grad_image, grad_text = torch.autograd.grad(loss, (image, text))
        mean_loss = sum(r[name][0] for r in per_rank) / WORLD
        torch.testing.assert_close(mean_loss, loss.detach().float())
        torch.testing.assert_close(torch.cat([r[name][1] for r in per_rank]), grad_image)
        torch.testing.assert_close(torch.cat([r[name][2] for r in per_rank]), grad_text)
