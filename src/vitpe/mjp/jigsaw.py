"""Jigsaw shuffles of the patch grid: MJP's block-wise shuffle and the naive full-shuffle baselines.

A draw is a :class:`Jigsaw`: a token order per row (one row shared by the batch, as the official code,
or one per sample), the positions that take MJP's shared "unknown" PE, and for the pixel-in-patch
baseline a permutation of the pixels inside a patch. The ViT applies it (vitpe.models.vit): pixels are
permuted before the patch embedding, tokens right after it. Permuting tokens after a stride-P patch
convolution equals permuting the P x P pixel patches before it (docs/FIDELITY.md row 12), and is
cheaper than Unfold/Fold; :func:`shuffle_pixels` gives the pixel-space picture (figures, checks).

Modes (official MJP code, data/masking_generator.py):
- ``mjp``: a block mask (block_mask.py) selects positions; the selected patches are randomly permuted
  among themselves (fixed points allowed); with an MJP PE the selected positions get the unknown row;
- ``patches``: all patches randomly permuted, PEs kept (naive shuffle);
- ``pixels``: the official ``pps`` mode: one pixel permutation shared by every patch and channel, then
  all patches randomly permuted, PEs kept.

Random sources are passed in (Python-``random``-like for block geometry, NumPy-like for
permutations); training passes the global generators, which the engine seeds and checkpoints.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vitpe.mjp.block_mask import UniformSource, sample_block_mask
from vitpe.models.patches import patchify, unpatchify

MODES = ("mjp", "patches", "pixels")


@dataclass(frozen=True)
class Jigsaw:
    """One shuffle draw for a batch (rows: 1 = shared by the batch, B = per sample)."""

    order: torch.Tensor  # [rows, N] long: output position i holds input patch order[., i]
    unk: torch.Tensor | None  # [rows, N] bool: shuffled positions (MJP mode), else None
    pixel_order: torch.Tensor | None = None  # [P * P] long, pixels mode only

    def to(self, device: torch.device | str) -> Jigsaw:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Jigsaw(move(self.order), move(self.unk), move(self.pixel_order))


def draw_jigsaw(mode: str, grid: int, rows: int = 1, ratio: float = 0.1, patch_size: int | None = None,
                py_rng: UniformSource = random, np_rng: Any = np.random) -> Jigsaw:
    """Draw ``rows`` shuffles of a ``grid`` x ``grid`` patch grid (``ratio``: MJP's gamma)."""
    n = grid * grid
    pixel_order = None
    if mode == "pixels":
        if patch_size is None:
            raise ValueError("the pixels mode needs the patch size")
        # official pps: one pixel permutation for every patch and image, drawn before the patch order
        pixel_order = torch.from_numpy(np_rng.permutation(patch_size * patch_size)).long()
    orders, unks = [], []
    for _ in range(rows):
        order = np.arange(n)
        if mode == "mjp":
            selected = np.flatnonzero(sample_block_mask(grid, ratio, py_rng))
            perm = selected.copy()
            np_rng.shuffle(perm)  # official: np.random.shuffle; position selected[i] gets patch perm[i]
            order[selected] = perm
            unk = np.zeros(n, dtype=bool)
            unk[selected] = True
            unks.append(unk)
        elif mode in ("patches", "pixels"):
            order = np_rng.permutation(n)
        else:
            raise ValueError(f"unknown jigsaw mode {mode!r} (known: {', '.join(MODES)})")
        orders.append(order)
    return Jigsaw(
        order=torch.from_numpy(np.stack(orders)).long(),
        unk=torch.from_numpy(np.stack(unks)) if unks else None,
        pixel_order=pixel_order,
    )


def permute_tokens(tokens: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """[B, N, D] patch tokens -> the same with position i holding token order[., i]."""
    index = order.to(tokens.device).expand(tokens.shape[0], -1).unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
    return tokens.gather(1, index)


def _patches(images: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, N, C, P, P] (row-major patches)."""
    return patchify(images, patch).unflatten(-1, (images.shape[1], patch, patch))


def _image(patches: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return unpatchify(patches.flatten(2), patches.shape[-1], (height, width))


def permute_pixels_in_patches(images: torch.Tensor, pixel_order: torch.Tensor, patch: int) -> torch.Tensor:
    """The pps pixel shuffle: pixel j of every patch (and channel) takes pixel pixel_order[j]."""
    b, c, h, w = images.shape
    x = _patches(images, patch).flatten(-2)
    x = x[..., pixel_order.to(images.device)]
    return _image(x.unflatten(-1, (patch, patch)), h, w)


def shuffle_pixels(images: torch.Tensor, jigsaw: Jigsaw, patch: int) -> torch.Tensor:
    """The whole jigsaw in pixel space (what the model sees, as an image)."""
    if jigsaw.pixel_order is not None:
        images = permute_pixels_in_patches(images, jigsaw.pixel_order, patch)
    b, c, h, w = images.shape
    patches = _patches(images, patch)
    index = jigsaw.order.to(images.device).expand(b, -1)
    patches = patches[torch.arange(b, device=images.device)[:, None], index]
    return _image(patches, h, w)
