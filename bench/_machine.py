"""The machine line the benchmarks print beside their figures: a figure means little without the
CPU it was taken on, and whether that CPU has the vector and matrix units PyTorch's, faiss' and
onnxruntime's kernels choose between. Imported by the scripts of this folder (``python
bench/x.py`` puts the folder on ``sys.path``)."""

from __future__ import annotations

import platform
import subprocess

# the flags that decide which fp32 / int8 / bf16 kernels a library takes
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_line() -> str:
    """The CPU's model name, its CPU count and which of ``KERNEL_FLAGS`` it has (from ``lscpu``;
    the processor's name alone where ``lscpu`` is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return platform.processor()
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    marks = [f for f in KERNEL_FLAGS if f in flags]
    model, cpus = fields.get("Model name", "?").strip(), fields.get("CPU(s)", "?").strip()
    return f"{model}, {cpus} CPUs, flags: {' '.join(marks) or 'none of ' + '/'.join(KERNEL_FLAGS)}"
