"""onnxruntime against PyTorch eager on this CPU: images/s of the image tower and texts/s of the
text tower at batch 1 and 64, for a randomly initialised preset (default ViT-B-32).

The model is exported with ``vislang.onnx.export.export_onnx`` into a temporary folder and opened
with ``vislang.load`` (onnxruntime, CPU provider); PyTorch runs the same weights in eval mode under
``torch.inference_mode``, fp32, with the same thread count. Texts are captions of about ten words
padded to the context length; both sides cut a batch after its longest text (the export's
``trim_padding``). The two engines alternate within each round; medians are printed. The load
average is printed first: with other jobs on the cores, PyTorch's OpenMP threads wait for each
other at every parallel region, so figures taken under load compare schedulers more than kernels.

    python bench/onnx_speed.py [--preset ViT-B-32] [--threads N] [--rounds 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _machine import cpu_line

import vislang
from vislang.experiment import build_config, build_objective
from vislang.onnx.export import export_onnx
from vislang.tokenizers import BPETokenizer

CAPTIONS = [
    "a photo of a dog running on the beach near the water",
    "two red cars parked in front of an old brick house",
    "a plate of pasta with tomato sauce on a wooden table",
    "a man riding a bicycle down a busy city street",
]
BATCHES = (1, 64)


def rate(run, batch: int, min_seconds: float) -> float:
    """Items/s of ``run()`` on ``batch`` items, repeated for at least ``min_seconds`` after one warm-up."""
    run()
    calls, start = 0, time.perf_counter()
    while True:
        run()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return batch * calls / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="ViT-B-32")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="least time per measurement")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime

    print(f"machine: {cpu_line()}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} threads each "
        f"(torch intra-op, onnxruntime intra_op_num_threads), preset {args.preset}, random weights, fp32"
    )
    torch.manual_seed(0)
    cfg = build_config({}, [f"model.preset={args.preset}"])
    tokenizer = BPETokenizer.train(CAPTIONS * 50, 1000, cfg.model.text.context_length)
    objective = build_objective(cfg, tokenizer.vocab_size, tokenizer.pad_id).eval()
    size = cfg.model.vision.image_size
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        _, checked = export_onnx(objective, tokenizer, cfg, Path(tmp) / "onnx")
        export_s = time.perf_counter() - start
        onnx_model = vislang.load(Path(tmp) / "onnx")[0]
        print(f"export {export_s:.1f} s; check at batch {checked['batch_sizes']}: {checked['max_abs_difference']}")
        inputs = {b: (torch.randn(b, 3, size, size), tokenizer([CAPTIONS[i % 4] for i in range(b)])) for b in BATCHES}
        with torch.inference_mode():
            difference = {
                "image": (objective.model.encode_image(inputs[64][0]) - onnx_model.encode_image(inputs[64][0])),
                "text": (objective.model.encode_text(inputs[64][1]) - onnx_model.encode_text(inputs[64][1])),
            }
            difference = {k: v.abs().max().item() for k, v in difference.items()}
            results: dict[tuple[str, int, str], list[float]] = {}
            for _ in range(args.rounds):
                for batch in BATCHES:
                    images, tokens = inputs[batch]
                    for engine, model in (("pytorch", objective.model), ("onnxruntime", onnx_model)):
                        results.setdefault(("image", batch, engine), []).append(
                            rate(lambda m=model, x=images: m.encode_image(x), batch, args.seconds)
                        )
                        results.setdefault(("text", batch, engine), []).append(
                            rate(lambda m=model, t=tokens: m.encode_text(t), batch, args.seconds)
                        )
    median = {key: statistics.median(values) for key, values in results.items()}
    print(f"max |onnxruntime - pytorch| at batch 64: image {difference['image']:.1e}, text {difference['text']:.1e}")
    print(f"\n{args.preset}, {args.threads} threads, medians of {args.rounds} rounds")
    print("| tower | batch | PyTorch eager | onnxruntime | onnxruntime / PyTorch |")
    print("|---|---|---|---|---|")
    rows = []
    for tower, unit in (("image", "images/s"), ("text", "texts/s")):
        for batch in BATCHES:
            pt, ort = median[(tower, batch, "pytorch")], median[(tower, batch, "onnxruntime")]
            print(f"| {tower} | {batch} | {pt:,.1f} {unit} | {ort:,.1f} {unit} | {ort / pt:.2f}× |")
            rows.append({"tower": tower, "batch": batch, "pytorch": round(pt, 2), "onnxruntime": round(ort, 2),
                         "ratio": round(ort / pt, 3)})  # fmt: skip
    summary = {"cpu": cpu_line(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
               "threads": args.threads, "preset": args.preset, "export_s": round(export_s, 1),
               "max_abs_difference_batch64": difference, "rows": rows}  # fmt: skip
    print(json.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
