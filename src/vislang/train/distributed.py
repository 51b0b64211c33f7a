"""Multi-process set-up under ``torchrun``: one process per device, gloo on CPU, nccl on CUDA.

``torchrun`` exports ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; without them (or with one
process) nothing is initialised and the run is an ordinary single-process run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The rank that logs, evaluates and writes checkpoints."""
        return self.rank == 0


def init_distributed(device: torch.device) -> Ranks:
    """Join the process group torchrun describes (if any) and return this process's place in it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    ranks = Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    return ranks


def local_device(device: torch.device) -> torch.device:
    """Under torchrun a plain "cuda" means this process's GPU, cuda:LOCAL_RANK."""
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def sum_counts(counts: dict[str, int]) -> dict[str, int]:
    """Data counters summed over the ranks (every rank must call it)."""
    if not dist.is_initialized():
        return dict(counts)
    gathered: list[dict[str, int]] = [{} for _ in range(dist.get_world_size())]
    dist.all_gather_object(gathered, dict(counts))
    total: dict[str, int] = {}
    for part in gathered:
        for key, value in part.items():
            total[key] = total.get(key, 0) + value
    return total


def gather_objects(value: object) -> list[object]:
    """Every rank's ``value`` (a list with one entry in a single process)."""
    if not dist.is_initialized():
        return [value]
    gathered: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered
