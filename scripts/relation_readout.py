"""Why relation binding stalls on the either-wording world: two supervised read-outs of the
study's image tower (docs/contrastive_vs_captioning.md, "How the world was chosen").

    python scripts/relation_readout.py --task query   # "where is the <colour> object?" (4-way)
    python scripts/relation_readout.py --task first   # "what colour is the left/upper object?" (8-way)

Both train the compositional study's ViT (48 px, conv stem, patch 8, width 96) plus one
cross-attention block on two-object scenes of the study world, with a direct label:

- ``query``: a colour embedding asks where the object of that colour is (left/right/above/
  below of the other one). This is what a caption in either wording needs ("a red circle" ->
  "to the left of"): the answer depends on the named colour *and* the image, and averaged over
  the named colour every image feature is uncorrelated with it.
- ``first``: a constant query asks for the colour of the left (or upper) object. This is what a
  reading-order caption needs to start with, and a single image feature (colour x position)
  answers it.

Each 100 steps it prints the test accuracy and, for ``query``, the accuracy on the axis alone
(left/right vs above/below), which needs no binding.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from vislang.config import ModelConfig, VisionConfig
from vislang.data.transforms import to_tensor
from vislang.data.world import COLORS, RELATIONS, World
from vislang.models.layers import Block
from vislang.objectives.towers import build_vision


def batch(world: World, cfg: VisionConfig, task: str, start: int, n: int, split: str):
    colors, relations = list(COLORS), list(RELATIONS)
    images, queries, labels = [], [], []
    for index in range(start, start + n):
        rng = world.rng(split, index)
        scene = world.sample_scene(rng, split, 2)
        images.append(world.render(scene, rng))
        if task == "query":
            k = int(rng.integers(2))  # ask about object k
            relation = scene.relation if k == 0 else RELATIONS[scene.relation][1]
            queries.append(colors.index(scene.objects[k].color))
            labels.append(relations.index(relation))
        else:
            first = 0 if scene.relation in ("left", "above") else 1
            queries.append(0)
            labels.append(colors.index(scene.objects[first].color))
    x = to_tensor(np.stack(images), cfg.image_mean, cfg.image_std)
    return x, torch.tensor(queries), torch.tensor(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("query", "first"), default="query")
    parser.add_argument("--depth", type=int, default=3, help="transformer blocks of the image tower")
    parser.add_argument("--pos-embed", choices=("learned", "sincos2d"), default="learned")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    cfg = VisionConfig(
        image_size=48, patch_size=8, width=96, depth=args.depth, heads=3, stem="conv", pos_embed=args.pos_embed
    )
    tower = build_vision(ModelConfig(vision=cfg), None)  # the ViT's token tower (no pooling head, no projection)
    query = nn.Embedding(len(COLORS), cfg.width)
    reader = Block(cfg.width, cfg.heads, 4.0, cross=True)
    head = nn.Sequential(nn.LayerNorm(cfg.width), nn.Linear(cfg.width, 4 if args.task == "query" else len(COLORS)))
    modules = nn.ModuleList([tower, query, reader, head])
    optimizer = torch.optim.AdamW(modules.parameters(), lr=args.lr, weight_decay=0.05)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 50))
    world = World(48, seed=0, two_object_prob=1.0, partial_caption_prob=0.0, distinct_colors=True)

    def logits(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return head(reader(query(q)[:, None], None, tower.tokens(x))[:, 0])

    test = batch(world, cfg, args.task, 0, 500, "test")
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        x, q, y = batch(world, cfg, args.task, step * args.batch, args.batch, "train")
        loss = nn.functional.cross_entropy(logits(x, q), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        warmup.step()
        if step % 100 == 0:
            with torch.no_grad():
                predicted = logits(test[0], test[1]).argmax(1)
            line = f"step {step}: loss {loss.item():.3f}, test accuracy {(predicted == test[2]).float().mean():.3f}"
            if args.task == "query":  # relations 0-1 are horizontal, 2-3 vertical
                axis = ((predicted >= 2) == (test[2] >= 2)).float().mean()
                line += f", axis only {axis:.3f}"
            print(f"{line} ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
