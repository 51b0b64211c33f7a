"""Saving and restoring PyTorch's random state, for checkpoints and for replaying a forward pass.

``rng_state()`` captures the CPU generator and the CUDA generators in use: every initialised
device, or only ``device`` when one is given (GradCache replays one device's micro-batches).
"""

from __future__ import annotations

from typing import Any

import torch


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device is not None:
        if device.type == "cuda":
            state["cuda_device"] = torch.cuda.get_rng_state(device)
    elif torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda_device" in state and device is not None:
        torch.cuda.set_rng_state(state["cuda_device"], device)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
