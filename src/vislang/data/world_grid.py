"""A grid of the built-in world's samples with their captions (``vislang data world``)."""

from __future__ import annotations

import numpy as np

from vislang.data.world import World

GRID_COLUMNS = 8


def world_grid(world: World, split: str, n: int) -> tuple[np.ndarray, list[str]]:
    """Samples ``0 .. n-1`` of ``split`` tiled row by row, at most 8 per row (uint8 H x W x 3; empty
    tiles black), and their captions in the same order."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    samples = [world.sample(split, i) for i in range(n)]
    side = world.image_size
    cols = min(GRID_COLUMNS, n)
    rows = -(-n // cols)
    grid = np.zeros((rows * side, cols * side, 3), dtype=np.uint8)
    for i, (image, _, _) in enumerate(samples):
        r, c = divmod(i, cols)
        grid[r * side : (r + 1) * side, c * side : (c + 1) * side] = image
    return grid, [caption for _, caption, _ in samples]
