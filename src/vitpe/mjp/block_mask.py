"""Which patches MJP shuffles: the BEiT block-mask sampler with the official MJP settings.

Semantics follow the official MJP ``data/masking_generator.py`` exactly (docs/FIDELITY.md row 10):

- target count ``N = int(num_patches * ratio)`` (a ratio <= 0 falls back to 0.1);
- blocks are drawn until the target is reached or one block fails 10 times; each block has
  ``target_area ~ U(min_block, budget)`` (the interval simply reversed when budget < min_block),
  log-uniform aspect ratio in [0.3, 1/0.3], ``h = round(sqrt(area * aspect))``, ``w = round(sqrt(area
  / aspect))`` with h, w < grid, and top/left drawn with inclusive bounds;
- a block is accepted if it adds between 1 and ``budget`` new cells; ``budget = min(N - count,
  max_block)`` where ``max_block`` is frozen at 75 in the trainer (the constructor default);
- so the union is at most N and often slightly below it.

The random source is any object with ``uniform`` and ``randint`` (Python's ``random`` module or a
``random.Random``). Training passes the global ``random`` module, which the engine seeds and saves in
every checkpoint, so a resumed run draws the same masks (the official code never seeded it).
"""
from __future__ import annotations

import math
from typing import Protocol

import numpy as np

MIN_BLOCK = 8
MAX_BLOCK = 75  # official: max_num_patches keeps the constructor default whatever the ratio
MIN_ASPECT = 0.3
TRIES_PER_BLOCK = 10
DEFAULT_RATIO = 0.1


class UniformSource(Protocol):
    def uniform(self, a: float, b: float) -> float: ...
    def randint(self, a: int, b: int) -> int: ...


def target_count(num_patches: int, ratio: float) -> int:
    """The official ``_num_patches_decaying``: int(num_patches * ratio), ratio <= 0 meaning 0.1."""
    return int(num_patches * (ratio if ratio > 0 else DEFAULT_RATIO))


def _one_block(mask: np.ndarray, budget: int, rng: UniformSource, min_block: int) -> int:
    """Try up to 10 rectangles; mark the first that adds 1..budget new cells; return how many."""
    height, width = mask.shape
    log_aspect = (math.log(MIN_ASPECT), math.log(1 / MIN_ASPECT))
    for _ in range(TRIES_PER_BLOCK):
        area = rng.uniform(min_block, budget)
        aspect = math.exp(rng.uniform(*log_aspect))
        h = int(round(math.sqrt(area * aspect)))
        w = int(round(math.sqrt(area / aspect)))
        if w < width and h < height:
            top = rng.randint(0, height - h)
            left = rng.randint(0, width - w)
            window = mask[top:top + h, left:left + w]
            new = h * w - int(window.sum())
            if 0 < new <= budget:
                window[window == 0] = 1
                return new
    return 0


def sample_block_mask(grid: int, ratio: float, rng: UniformSource, min_block: int = MIN_BLOCK,
                      max_block: int = MAX_BLOCK) -> np.ndarray:
    """A [grid, grid] bool mask of the patches to shuffle (row-major patch order)."""
    mask = np.zeros((grid, grid), dtype=np.int32)
    goal = target_count(grid * grid, ratio)
    count = 0
    while count < goal:
        added = _one_block(mask, min(goal - count, max_block), rng, min_block)
        if added == 0:
            break
        count += added
    return mask.astype(bool)
