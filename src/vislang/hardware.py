"""What this machine's CPU does fast, read from its flags: the choices that depend on it (the
attention implementation under bf16, the run log's note on emulated bf16) ask here."""

from __future__ import annotations

import functools
from pathlib import Path


def cpu_has_bf16_units(cpuinfo: str | Path = "/proc/cpuinfo") -> bool | None:
    """Whether the CPU has bf16 matrix instructions (AVX512-BF16 or AMX-BF16); None where the
    flags cannot be read. Without them PyTorch emulates bf16 matmuls: on an AVX2 EPYC a bf16
    training step measured ~25x slower than fp32 (BENCHMARKS.md)."""
    try:
        flags = next(line for line in Path(cpuinfo).read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags


@functools.cache
def this_cpu_has_bf16_units() -> bool:
    """``cpu_has_bf16_units()`` of this machine, read once per process (asked on every attention call)."""
    return bool(cpu_has_bf16_units())
