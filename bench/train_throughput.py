"""Training-step throughput and peak memory of vislang against OpenCLIP on the same architecture.

One timed unit is a full CLIP training step: forward through both towers, the symmetric
contrastive loss, backward and an AdamW step. vislang uses ``build_two_tower`` + ``clip_loss`` +
its training optimizer (``build_optimizer``: fused AdamW); OpenCLIP uses ``open_clip.model.CLIP``
+ ``open_clip.loss.ClipLoss`` + AdamW as its training script builds it (per-tensor kernel). Both get the same random
batch (seeded images; token ids followed by the end-of-text id 49407 after 4-15 tokens, then
padding 0, so OpenCLIP's argmax pooling and vislang's last-real-token pooling read the same
position) and the same vocabulary (49408). Architectures:

* ``small``: image 64, patch 8, width 256, depth 6, 8 heads, class-token pooling, patch stem;
  text context 32, width 256, depth 4, 8 heads; embedding 256. OpenCLIP gets it as a custom
  ``CLIP(embed_dim, vision_cfg, text_cfg)``.
* ``ViT-B-32``: vislang's preset and OpenCLIP's ``create_model("ViT-B-32")`` (random weights).

Every (library, architecture, precision) measurement runs in a fresh subprocess: warm-up steps,
then timed steps, each timed on its own; a round's figure is the batch over the median step time.
The peak memory figure is the subprocess's peak RSS (``ru_maxrss``) minus its RSS just before the
model was built (on CUDA: ``max_memory_allocated`` minus the memory allocated before the build),
so it covers parameters, gradients, AdamW state and activations but not the imports or the input
batch. The two libraries alternate (their order flips every round) and the figures are medians
over ``--rounds`` rounds, so background load hits both alike. bf16 means ``torch.autocast``
(OpenCLIP's ``amp_bf16``) over fp32 weights. vislang's attention implementation is
``--attn-impl`` (default ``auto``); the column "attention" reports what each library actually
ran (``sdpa`` if ``F.scaled_dot_product_attention`` was called, else ``math``).

``--flip`` measures instead an image-tower-only step (vislang's ViT forward, a cosine loss of the
pooled features against fixed random targets, backward, AdamW) in train mode at
``model.vision.mask_ratio`` 0, 0.5 and 0.75 (FLIP token dropping) and prints the speed-ups over 0
against the targets 1.6x and 2.5x.

Usage: python bench/train_throughput.py [--arch {small,ViT-B-32,ViT-B-16,all}] [--batch N] [--steps N]
       [--warmup N] [--precision {fp32,bf16,both}] [--device cpu|cuda] [--rounds 3]
       [--attn-impl {auto,sdpa,math}] [--threads N] [--flip]

Defaults on the CPU: 3 rounds, 1 warm-up step; fp32: batch 64 (small) / 16 (ViT-B-32) and 5 / 3
timed steps; bf16: batch 16 / 4 and 1 timed step, because a CPU without bf16 matrix units (such
as the AVX2-only development machine) runs bf16 matmuls about 100x slower than fp32. On CUDA:
batch 256 / 128, 3 warm-up and 20 timed steps. Measured run times on the 2-core development
machine with ``--threads 1`` (it was shared with other work): the full default run 32 minutes
(18 of them ViT-B-32 in bf16, ~90 s a step); ``--arch small --steps 3 --rounds 1`` 3 minutes;
``--flip --arch small --steps 3 --rounds 1`` 2.5 minutes; ``--flip --arch ViT-B-32 --precision
fp32`` 4 minutes. With other work on the machine use ``--threads 1``: two threads sharing a core
with another process made step times swing by up to 5x.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F

VOCAB = 49408  # OpenCLIP's vocabulary (its tokenizer's size); vislang is given the same
EOT = VOCAB - 1  # OpenCLIP's end-of-text id, the largest id (its argmax pooling finds it)
PAD = 0
LIBS = ("vislang", "open_clip")
ARCHS = ("small", "ViT-B-32", "ViT-B-16")
CLIP_ARCHS = ("ViT-B-32", "ViT-B-16")  # OpenCLIP names; vislang presets of the same name
DEFAULT_ARCHS = ("small", "ViT-B-32")  # "all" on a CPU: ViT-B-16 is for the GPU script
MASK_RATIOS = (0.0, 0.5, 0.75)
FLIP_TARGETS = {0.5: 1.6, 0.75: 2.5}  # speed-up targets of the project issue

SMALL_VISION = {"image_size": 64, "patch_size": 8, "width": 256, "depth": 6, "heads": 8}
SMALL_TEXT = {"context_length": 32, "width": 256, "depth": 4, "heads": 8}
SMALL_EMBED = 256


# -- models ----------------------------------------------------------------------------------


def vislang_config(arch: str, attn_impl: str, mask_ratio: float = 0.0):
    from vislang.experiment import build_config

    if arch in CLIP_ARCHS:
        raw: dict[str, Any] = {"model": {"preset": arch}}
    else:
        # Every field OpenCLIP's CLIP fixes is pinned, so that a change of vislang's defaults (the
        # demo's MLP ratio 2, say) cannot silently change the architecture compared.
        vision = {**SMALL_VISION, "stem": "patch", "pool": "cls", "mlp_ratio": 4.0, "patch_bias": False}
        text = {**SMALL_TEXT, "causal": True, "mlp_ratio": 4.0}
        raw = {"model": {"embed_dim": SMALL_EMBED, "vision": vision, "text": text}}
    return build_config(raw, [f"model.attn_impl={attn_impl}", f"model.vision.mask_ratio={mask_ratio}"]).model


def open_clip_model(arch: str) -> torch.nn.Module:
    import logging

    import open_clip

    if arch in CLIP_ARCHS:
        logging.getLogger().setLevel(logging.ERROR)  # silence "no pretrained weights loaded"
        return open_clip.create_model(arch, pretrained=None)
    v, t = SMALL_VISION, SMALL_TEXT
    vision_cfg = {
        "image_size": v["image_size"],
        "patch_size": v["patch_size"],
        "width": v["width"],
        "layers": v["depth"],
        "head_width": v["width"] // v["heads"],
    }
    text_cfg = {
        "context_length": t["context_length"],
        "vocab_size": VOCAB,
        "width": t["width"],
        "heads": t["heads"],
        "layers": t["depth"],
    }
    return open_clip.model.CLIP(SMALL_EMBED, vision_cfg, text_cfg)


def count(model: torch.nn.Module, prefixes: tuple[str, ...] = ("",)) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefixes))


def param_summary(lib: str, model: torch.nn.Module) -> dict[str, int]:
    """Total and per-tower counts."""
    if lib == "vislang":
        vision = count(model, ("vision.",))
        text = count(model, ("text.",))
        return {
            "total": count(model),
            "vision": vision,
            "text": text,
            "other": count(model) - vision - text,
        }
    vision = count(model, ("visual.",))
    text = count(model, ("transformer.", "token_embedding.", "positional_embedding", "ln_final.", "text_projection"))
    return {
        "total": count(model),
        "vision": vision,
        "text": text,
        "other": count(model) - vision - text,
    }


# -- inputs and memory -------------------------------------------------------------------------


def make_inputs(arch: str, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    image_size = 224 if arch in CLIP_ARCHS else SMALL_VISION["image_size"]
    context = 77 if arch in CLIP_ARCHS else SMALL_TEXT["context_length"]
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, image_size, image_size, generator=g)
    tokens = torch.randint(1, EOT, (batch, context), generator=g)
    lengths = torch.randint(4, min(16, context), (batch,), generator=g)
    for i, n in enumerate(lengths.tolist()):
        tokens[i, n - 1] = EOT
        tokens[i, n:] = PAD
    return images.to(device), tokens.to(device)


def current_rss() -> int:
    """Resident bytes now (Linux); elsewhere the peak so far, which then is subtracted instead."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_start(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    return current_rss()


def memory_peak(device: torch.device, start: int) -> float:
    """MiB above ``start`` at the peak."""
    if device.type == "cuda":
        return (torch.cuda.max_memory_allocated(device) - start) / 2**20
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - start) / 2**20


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- one measurement (runs in its own subprocess) ----------------------------------------------


def count_sdpa_calls(fn) -> int:
    """Run ``fn`` once and count calls to F.scaled_dot_product_attention (0: plain matmul attention)."""
    original = F.scaled_dot_product_attention
    calls = 0

    def counting(*args, **kwargs):
        nonlocal calls
        calls += 1
        return original(*args, **kwargs)

    F.scaled_dot_product_attention = counting
    try:
        fn()
    finally:
        F.scaled_dot_product_attention = original
    return calls


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    arch, batch = spec["arch"], spec["batch"]
    torch.manual_seed(0)
    images, tokens = make_inputs(arch, batch, device)
    start = memory_start(device)
    seen: list[int] = []  # sequence lengths entering the image transformer (flip mode)

    if spec["mode"] == "flip":
        from vislang.objectives.towers import build_vision

        cfg = vislang_config(arch, spec["attn_impl"], spec["mask_ratio"])
        model = build_vision(cfg, cfg.embed_dim).to(device).train()  # the ViT (model.vision.kind vit)
        targets = F.normalize(torch.randn(batch, cfg.embed_dim, generator=torch.Generator().manual_seed(1)), dim=-1)
        targets = targets.to(device)

        def loss_fn() -> torch.Tensor:
            return 1 - F.cosine_similarity(model(images).float(), targets, dim=-1).mean()

        model.transformer.register_forward_pre_hook(lambda _module, inputs: seen.append(inputs[0].shape[1]))
        params: dict[str, int] = {"total": count(model)}
    elif spec["lib"] == "vislang":
        from vislang.losses import clip_loss
        from vislang.objectives.towers import build_two_tower

        model = build_two_tower(vislang_config(arch, spec["attn_impl"]), vocab_size=VOCAB, pad_id=PAD)
        model = model.to(device).train()

        def loss_fn() -> torch.Tensor:
            image, text = model(images, tokens)
            return clip_loss(image, text, model.scale())

        params = param_summary("vislang", model)
    else:
        from open_clip.loss import ClipLoss

        model = open_clip_model(arch).to(device).train()
        criterion = ClipLoss()

        def loss_fn() -> torch.Tensor:
            image, text, scale = model(images, tokens)
            return criterion(image, text, scale)

        params = param_summary("open_clip", model)

    if spec["lib"] == "vislang":  # each library's own training optimizer
        from vislang.config import TrainConfig
        from vislang.train.optim import build_optimizer

        optimizer = build_optimizer(model, TrainConfig(lr=1e-4, weight_decay=0.1))
    else:  # OpenCLIP's training script: AdamW (its per-tensor foreach kernel)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec["precision"] == "bf16"):
            loss = loss_fn()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    sdpa_calls = count_sdpa_calls(step)  # the first warm-up step
    for _ in range(spec["warmup"] - 1):
        step()
    times = []
    for _ in range(spec["steps"]):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)  # robust to a burst of background load during one step
    flops = None
    if device.type == "cuda":  # model FLOPs of one step (forward + backward), for the utilisation
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            step()
        flops = counter.get_total_flops()
    return {
        "flops": flops,
        "samples_per_s": batch / step_s,
        "step_s": step_s,
        "step_times": times,
        "peak_mib": memory_peak(device, start),
        "attention": "sdpa" if sdpa_calls else "math",
        "params": params,
        "tokens": seen[-1] if seen else None,
    }


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)], capture_output=True, text=True
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"measurement {spec} failed (exit code {proc.returncode})")
    return json.loads(lines[-1].removeprefix("RESULT "))


# -- the parent: schedule, medians, report -----------------------------------------------------


def default_steps(arch: str, precision: str, device: str) -> int:
    if device.startswith("cuda"):
        return 20
    if precision == "bf16":
        return 1
    return 5 if arch == "small" else 3


def default_batch(arch: str, precision: str, device: str) -> int:
    if device.startswith("cuda"):
        return 256 if arch == "small" else 128
    if precision == "bf16":  # CPUs without bf16 matrix units run bf16 matmuls ~100x slower than fp32
        return 16 if arch == "small" else 4
    return 64 if arch == "small" else 16


def spec_for(args: argparse.Namespace, arch: str, precision: str, **extra: Any) -> dict[str, Any]:
    return {
        "arch": arch,
        "precision": precision,
        "batch": args.batch or default_batch(arch, precision, args.device),
        "steps": args.steps or default_steps(arch, precision, args.device),
        "warmup": args.warmup or (3 if args.device.startswith("cuda") else 1),
        "device": args.device,
        "threads": args.threads,
        "attn_impl": args.attn_impl,
        **extra,
    }


def med(results: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in results)


def explain_params(arch: str, vl: dict[str, int], oc: dict[str, int]) -> None:
    print(f"  {arch}: parameters vislang {vl['total']:,} vs open_clip {oc['total']:,}", end="")
    print(" (equal)" if vl["total"] == oc["total"] else f" (differ by {vl['total'] - oc['total']:+,})")
    for part in ("vision", "text", "other"):
        same = "=" if vl[part] == oc[part] else "!="
        print(f"    {part:6s} {vl[part]:>12,} {same} {oc[part]:,}")
    if vl["total"] != oc["total"]:
        print("    WARNING: the totals differ; the comparison is not like for like")


def progress(r: int, args: argparse.Namespace, label: str, spec: dict[str, Any], res: dict[str, Any]) -> None:
    steps = " ".join(f"{t:.2f}" for t in res["step_times"])
    print(
        f"  round {r + 1}/{args.rounds} {label}: batch {spec['batch']}, step times {steps} s -> "
        f"{fmt(res['samples_per_s'])} samples/s, peak {res['peak_mib']:.0f} MiB",
        flush=True,
    )


def fmt(rate: float) -> str:
    """Samples/s with 2 decimals, or 3 significant digits below 1 (bf16 on CPUs without bf16 units)."""
    return f"{rate:.2f}" if rate >= 1 else f"{rate:.3g}"


def per_round(rs: list[dict[str, Any]]) -> str:
    return " / ".join(fmt(r["samples_per_s"]) for r in rs)


def clip_section(args: argparse.Namespace, archs: list[str], precisions: list[str]) -> None:
    results: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in range(args.rounds):
        for arch in archs:
            for precision in precisions:
                for lib in LIBS if r % 2 == 0 else LIBS[::-1]:
                    spec = spec_for(args, arch, precision, mode="clip", lib=lib)
                    res = run_worker(spec)
                    results.setdefault((arch, precision, lib), []).append(res)
                    progress(r, args, f"{arch} {precision} {lib}", spec, res)

    print("\nParameter counts")
    for arch in archs:
        vl_params = results[(arch, precisions[0], "vislang")][0]["params"]
        explain_params(arch, vl_params, results[(arch, precisions[0], "open_clip")][0]["params"])

    memory = "max_memory_allocated" if args.device.startswith("cuda") else "peak RSS"
    print(
        f"\nMedians over {args.rounds} round(s); samples/s = batch / median step time of a round; "
        f"peak MiB = {memory} above the figure before the model was built"
    )
    print("| arch | precision | library | attention | batch | samples/s | per round | peak MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for arch in archs:
        for precision in precisions:
            for lib in LIBS:
                rs = results[(arch, precision, lib)]
                print(
                    f"| {arch} | {precision} | {lib} | {rs[0]['attention']} | {spec_for(args, arch, precision)['batch']} "
                    f"| {fmt(med(rs, 'samples_per_s'))} | {per_round(rs)} | {med(rs, 'peak_mib'):.0f} |"
                )
    print()
    for arch in archs:
        for precision in precisions:
            vl, oc = results[(arch, precision, "vislang")], results[(arch, precision, "open_clip")]
            v_rate, o_rate = med(vl, "samples_per_s"), med(oc, "samples_per_s")
            v_mem, o_mem = med(vl, "peak_mib"), med(oc, "peak_mib")
            print(
                f"{arch} {precision}: vislang {fmt(v_rate)} samples/s, open_clip {fmt(o_rate)} samples/s, "
                f"ratio {v_rate / o_rate:.2f}x; peak MiB {v_mem:.0f} vs {o_mem:.0f} (ratio {v_mem / o_mem:.2f}x)"
            )
            if vl[0].get("flops"):  # CUDA: model FLOP utilisation against --peak-tflops
                batch = spec_for(args, arch, precision)["batch"]
                for name, rs, rate in (("vislang", vl, v_rate), ("open_clip", oc, o_rate)):
                    achieved = rs[0]["flops"] / batch * rate / 1e12
                    print(f"  {name}: {achieved:.0f} TFLOP/s, MFU {achieved / args.peak_tflops:.1%}")


def flip_section(args: argparse.Namespace, archs: list[str], precisions: list[str]) -> None:
    results: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for r in range(args.rounds):
        for arch in archs:
            for precision in precisions:
                for ratio in MASK_RATIOS if r % 2 == 0 else MASK_RATIOS[::-1]:
                    spec = spec_for(args, arch, precision, mode="flip", lib="vislang", mask_ratio=ratio)
                    res = run_worker(spec)
                    results.setdefault((arch, precision, ratio), []).append(res)
                    progress(r, args, f"{arch} {precision} mask_ratio {ratio}", spec, res)

    print(
        f"\nImage tower only (vislang, train mode), medians over {args.rounds} round(s); "
        f"tokens = sequence length entering the transformer (class token included)"
    )
    print(
        "| arch | precision | mask_ratio | tokens | batch | samples/s | per round | speed-up vs 0 | target | peak MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    lines = []
    for arch in archs:
        for precision in precisions:
            base = med(results[(arch, precision, 0.0)], "samples_per_s")
            for ratio in MASK_RATIOS:
                rs = results[(arch, precision, ratio)]
                rate = med(rs, "samples_per_s")
                target = FLIP_TARGETS.get(ratio)
                verdict = "" if target is None else f">= {target}x: {'met' if rate / base >= target else 'NOT met'}"
                print(
                    f"| {arch} | {precision} | {ratio} | {rs[0]['tokens']} | {spec_for(args, arch, precision)['batch']} "
                    f"| {fmt(rate)} | {per_round(rs)} | {rate / base:.2f}x | {verdict} | {med(rs, 'peak_mib'):.0f} |"
                )
                if ratio:
                    lines.append(
                        f"{arch} {precision} mask_ratio {ratio}: {fmt(rate)} vs {fmt(base)} samples/s at 0, "
                        f"speed-up {rate / base:.2f}x (target {verdict})"
                    )
    print("\n" + "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=[*ARCHS, "all"], default="all")
    parser.add_argument("--batch", type=int, default=None, help="default: see the module docstring")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: see the module docstring)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1 on CPU, 3 on CUDA)")
    parser.add_argument("--precision", choices=["fp32", "bf16", "both"], default="both")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--attn-impl", choices=["auto", "sdpa", "math"], default="auto", help="vislang model.attn_impl")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: all cores)")
    parser.add_argument("--flip", action="store_true", help="image-tower step at mask_ratio 0 / 0.5 / 0.75 instead")
    parser.add_argument(
        "--peak-tflops", type=float, default=989.0, help="device peak for MFU (default 989: H100/H200 dense bf16)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return

    args.threads = args.threads or os.cpu_count() or 1
    archs = list(DEFAULT_ARCHS) if args.arch == "all" else [args.arch]
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    import open_clip

    device = torch.device(args.device)
    capability = torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(
        f"torch {torch.__version__}, open_clip {open_clip.__version__}, device {args.device} ({capability}), "
        f"{args.threads} threads; vislang model.attn_impl={args.attn_impl}; OpenCLIP attention: "
        f"nn.MultiheadAttention; optimizer AdamW; bf16 = torch.autocast over fp32 weights"
    )
    if args.flip:
        flip_section(args, archs, precisions)
    else:
        clip_section(args, archs, precisions)


if __name__ == "__main__":
    main()
