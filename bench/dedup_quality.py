"""Near-duplicate detection quality: recall per kind of copy and the false-positive rate over
pairs of distinct images, for the perceptual hash and for an embedding model, on generated
photograph stand-ins (``vislang.data.photos``) with injected copies.

    python bench/dedup_quality.py [--images 300] [--checkpoint MODEL]

Without ``--checkpoint`` the embedding model is a *randomly initialised* timm ResNet-18 image
tower (no pretrained weights are available offline here): it shows what an embedding gives
without training, not what a copy-detection model (SSCD) would.
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import numpy as np


def random_resnet(folder: Path) -> str:
    from vislang.experiment import build_config, build_objective
    from vislang.export import export_objective
    from vislang.tokenizers import BPETokenizer

    cfg = build_config(
        {
            "model": {
                "embed_dim": 512,
                "vision": {
                    "kind": "timm",
                    "timm_model": "resnet18",
                    "image_size": 224,
                    "proj": "none",
                    "image_mean": [0.485, 0.456, 0.406],
                    "image_std": [0.229, 0.224, 0.225],
                },
            }
        }  # fmt: skip
    )
    tokenizer = BPETokenizer.train(["a photo"] * 20, 300, cfg.model.text.context_length)
    objective = build_objective(cfg, tokenizer.vocab_size, tokenizer.pad_id)
    return str(export_objective(objective, tokenizer, cfg, folder / "resnet18"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--checkpoint", help="an embedding model vislang.load opens (default: random ResNet-18)")
    args = parser.parse_args()

    from PIL import Image

    from vislang.curate.dedup import duplicate_pairs, phash
    from vislang.curate.models import ImageEncoder
    from vislang.data.photos import encode, near_copies, photo

    rng = np.random.default_rng(0)
    bases = [photo(rng) for _ in range(args.images)]
    originals = [encode(b) for b in bases]
    copies = [near_copies(b, crops=True) for b in bases]
    kinds = list(copies[0])
    n_negative = len(bases) * (len(bases) - 1) // 2

    def report(name: str, describe, method: str, thresholds: list[float]) -> None:
        base = describe(originals)
        variants = {k: describe([c[k] for c in copies]) for k in kinds}
        print(f"\n{name}\n| threshold | " + " | ".join(kinds) + " | false pairs (rate) |")
        print("|---" * (len(kinds) + 2) + "|")
        for t in thresholds:
            recalls = []
            for k in kinds:
                pairs = duplicate_pairs(variants[k], base, method, t)
                recalls.append(np.mean([i in set(pairs[pairs[:, 0] == i, 1].tolist()) for i in range(len(bases))]))
            false = len(duplicate_pairs(base, None, method, t))
            print(f"| {t:g} | " + " | ".join(f"{r:.3f}" for r in recalls) + f" | {false} ({false / n_negative:.2%}) |")

    report("perceptual hash (max Hamming distance, bits)", lambda data: np.stack([phash(d) for d in data]), "phash",
           [4, 6, 8, 10, 14])  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or random_resnet(Path(tmp))
        name = args.checkpoint or "randomly initialised timm ResNet-18 (cosine similarity)"

        def embed(data: list[bytes]) -> np.ndarray:
            encoder = ImageEncoder(checkpoint)
            for item in data:
                encoder.add(Image.open(io.BytesIO(item)).convert("RGB"))
            return encoder.result()

        report(name, embed, "embedding", [0.9, 0.95, 0.98, 0.99, 0.995])


if __name__ == "__main__":
    main()
