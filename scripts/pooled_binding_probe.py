"""Does a trained image tower's pooled vector say which colour is on the left? A linear read-out
of the study's towers (docs/contrastive_vs_captioning.md, "Where the contrastive models fail").

    python scripts/pooled_binding_probe.py runs/study/clip runs/study/clip_hardneg runs/study/cap

For two-object scenes of the study world (the two colours always differ), each tower's pooled
features (the mean of its final tokens, before any projection: what a contrastive head sees) are
fitted by multinomial logistic regression to the colour of the left (or upper) object, 8-way.
Features that hold both colours but not where they are can reach about 0.5 (pick one of the two
present); features that bind colour to position reach 1.0. A second read-out, the colour of
*an* object (the lone-colour question any bag of colours answers), shows the colours are there.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from vislang.checkpoint import load_checkpoint
from vislang.data.transforms import to_tensor
from vislang.data.world import COLORS, World
from vislang.experiment import RunConfig
from vislang.objectives.towers import build_vision
from vislang.train.init_from import init_tower_from


def scenes(world: World, split: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images, the colour of the left/upper object, and the colour of a random one of the two."""
    colors = list(COLORS)
    images, first, any_one = [], [], []
    for index in range(n):
        rng = world.rng(split, index)
        scene = world.sample_scene(rng, split, 2)
        images.append(world.render(scene, rng))
        leading = 0 if scene.relation in ("left", "above") else 1
        first.append(colors.index(scene.objects[leading].color))
        any_one.append(colors.index(scene.objects[int(rng.integers(2))].color))
    return np.stack(images), np.array(first), np.array(any_one)


@torch.no_grad()
def pooled_features(run: str, *image_sets: np.ndarray) -> list[torch.Tensor]:
    """The run's image tower, built and loaded once, applied to each set of images."""
    cfg = RunConfig.model_validate(load_checkpoint(run)["config"]).model
    tower = build_vision(cfg, None).eval()
    init_tower_from(tower, run, "model.vision.")
    features = []
    for images in image_sets:
        x = to_tensor(images, cfg.vision.image_mean, cfg.vision.image_std)
        features.append(torch.cat([tower.tokens(part).mean(dim=1) for part in x.split(250)]))
    return features


def linear_readout(train_x: torch.Tensor, train_y: np.ndarray, test_x: torch.Tensor, test_y: np.ndarray) -> float:
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mean) / std, (test_x - mean) / std
    head = torch.nn.Linear(a.shape[1], len(COLORS))
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=300, line_search_fn="strong_wolfe")
    target = torch.as_tensor(train_y)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(a), target) + 1e-3 * head.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return (head(b).argmax(1).numpy() == test_y).mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories (or checkpoint files) of the study")
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--test", type=int, default=1000)
    args = parser.parse_args()
    torch.manual_seed(0)
    world = World(48, seed=0, two_object_prob=1.0, partial_caption_prob=0.0, distinct_colors=True)
    train_images, train_first, train_any = scenes(world, "train", args.train)
    test_images, test_first, test_any = scenes(world, "test", args.test)
    print("| tower | left/upper object's colour (binding) | a present colour (no binding) |")
    print("|---|---|---|")
    for run in args.runs:
        train_x, test_x = pooled_features(run, train_images, test_images)
        binding = linear_readout(train_x, train_first, test_x, test_first)
        present = linear_readout(train_x, train_any, test_x, test_any)
        print(f"| {run} | {binding:.3f} | {present:.3f} |", flush=True)


if __name__ == "__main__":
    main()
