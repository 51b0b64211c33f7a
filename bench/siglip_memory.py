"""Peak memory and time of the SigLIP loss (forward + backward) on a large batch, with and
without ``objective.chunk`` (objective kind siglip), and OpenCLIP's SigLipLoss on the same
features as the peer.

    python bench/siglip_memory.py --batch 8192 --dim 512 --chunks 0 2048 512

Each configuration runs in its own process. Two memory figures: the peak of live tensor bytes
during the call, from the PyTorch profiler's allocation events (what the loss itself holds), and
the peak RSS (ru_maxrss) above the process's footprint once the features exist. The processes run
with glibc's mmap threshold fixed at 64 KiB (``MALLOC_MMAP_THRESHOLD_``): otherwise glibc raises
it after the first large free, serves the chunks' blocks (16 MiB at batch 4096, chunk 1024) from
the heap and keeps them resident, and RSS would measure the allocator rather than the loss. The
time is the median of three calls after the first (without the profiler), in a second process
with glibc's default settings. The gradients of the
chunked loss are compared with the unchunked ones in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(batch: int, dim: int, chunk: int, peer: bool) -> dict:
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(batch, dim, generator=g), dim=-1).requires_grad_()
    text = F.normalize(torch.randn(batch, dim, generator=g), dim=-1).requires_grad_()
    scale, bias = torch.tensor(10.0), torch.tensor(-10.0)
    if peer:
        from open_clip.loss import SigLipLoss

        loss_fn = SigLipLoss()
    else:
        from vislang.losses import siglip_loss

        def loss_fn(image, text, scale, bias):
            return siglip_loss(image, text, scale, bias, chunk=chunk)

    small = image[:64].detach().requires_grad_(), text[:64].detach().requires_grad_()
    loss_fn(*small, scale, bias).backward()  # imports and first-call costs stay out of the figures
    base = _peak_mib()  # only the loss's own memory is counted
    loss = loss_fn(image, text, scale, bias)
    loss.backward()
    rss = _peak_mib() - base
    checksum = float(image.grad.double().abs().sum() + text.grad.double().abs().sum())
    times = []
    for _ in range(3):  # after the first full-size call: the allocator's pages are warm
        image.grad = text.grad = None
        start = time.perf_counter()
        loss_fn(image, text, scale, bias).backward()
        times.append(time.perf_counter() - start)
    seconds = sorted(times)[1]
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss_fn(image, text, scale, bias).backward()
    live = peak = 0
    for event in sorted(prof.profiler.kineto_results.events(), key=lambda e: e.start_ns()):
        if event.name() == "[memory]":
            live += event.nbytes()
            peak = max(peak, live)
    return {
        "tensor_mib": peak / 2**20,
        "rss_mib": rss,
        "seconds": seconds,
        "loss": float(loss),
        "grad_abs_sum": checksum,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--chunks", type=int, nargs="+", default=[0, 2048, 512])
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one configuration
    args = parser.parse_args()
    if args.one is not None:
        kind, chunk = args.one.split(":")
        print(json.dumps(measure(args.batch, args.dim, int(chunk), kind == "open_clip")))
        return

    runs = [("vislang", c) for c in args.chunks] + [("open_clip", 0)]
    results = {}
    for kind, chunk in runs:
        command = [
            sys.executable,
            __file__,
            "--batch",
            str(args.batch),
            "--dim",
            str(args.dim),
            "--one",
            f"{kind}:{chunk}",
        ]
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        memory = subprocess.run(command, capture_output=True, text=True, env=env)
        timing = subprocess.run(command, capture_output=True, text=True)
        if memory.returncode or timing.returncode:
            print(f"{kind} chunk {chunk}: failed: {(memory.stderr + timing.stderr).strip().splitlines()[-1]}")
            continue
        results[(kind, chunk)] = {**json.loads(memory.stdout), "seconds": json.loads(timing.stdout)["seconds"]}
    print(f"SigLIP loss forward+backward, batch {args.batch} x {args.batch} pairs, dim {args.dim}, fp32, CPU")
    reference = results.get(("open_clip", 0))
    header = ("loss", "tensor MiB", "vs open_clip", "RSS MiB", "seconds", "vs open_clip", "grad check")
    print(f"{header[0]:<22}" + "".join(f"{h:>14}" for h in header[1:]))
    for (kind, chunk), r in results.items():
        label = f"{kind} chunk {chunk}" if kind == "vislang" else "open_clip SigLipLoss"
        memory = f"{r['tensor_mib'] / reference['tensor_mib']:.2f}x" if reference else "-"
        speed = f"{reference['seconds'] / r['seconds']:.2f}x" if reference else "-"
        same = abs(r["grad_abs_sum"] - results[("vislang", args.chunks[0])]["grad_abs_sum"])
        check = "same" if same <= 1e-4 * r["grad_abs_sum"] else f"diff {same:.2e}"
        cells = (f"{r['tensor_mib']:.0f}", memory, f"{r['rss_mib']:.0f}", f"{r['seconds']:.2f}", speed, check)
        print(f"{label:<22}" + "".join(f"{c:>14}" for c in cells))


if __name__ == "__main__":
    main()
