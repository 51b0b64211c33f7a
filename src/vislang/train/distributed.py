"""Multi-process set-up under ``torchrun``: one process per device, gloo on CPU, nccl on CUDA.

``torchrun`` exports ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; without them (or with one
process) nothing is initialised and the run is an ordinary single-process run.

``train.fsdp`` shards every transformer block with FSDP2 (``fully_shard``): each rank keeps
1/world of the blocks' weights, gradients and optimizer state, and gathers a block's weights
only while it runs. The remaining parameters (embeddings, projections, logit scale: small, and
the scalar scale cannot be sharded) stay replicated and have their gradients averaged by the
loop. Checkpoints hold full (unsharded) state, so any run can load them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard

from vislang.models.layers import Block


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
    total: dict[str, int] = {}
    for part in gather_objects(dict(counts)):
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


def shard_blocks(module: nn.Module) -> None:
    """FSDP2 on every transformer block of ``module`` (both towers, decoders)."""
    for block in [m for m in module.modules() if isinstance(m, Block)]:
        fully_shard(block)


def training_state(module: nn.Module, optimizer: torch.optim.Optimizer, fsdp: bool) -> tuple[dict, dict]:
    """Full model and optimizer state dicts (a collective under FSDP: every rank must call it)."""
    if not fsdp:
        return module.state_dict(), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(module, options=options), get_optimizer_state_dict(module, optimizer, options=options)


def load_training_state(
    module: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict, optimizer_state: dict, fsdp: bool
) -> None:
    """Load full state dicts written by :func:`training_state` (sharding them under FSDP)."""
    if not fsdp:
        module.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(module, model_state, options=options)
    set_optimizer_state_dict(module, optimizer, optimizer_state, options=options)
