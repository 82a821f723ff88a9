"""Images <-> row-major sequences of flattened P x P patches, in the two per-patch layouts in use.

- ``channels_first``: (c, p, q) inside a patch, the order of a stride-P patch-embedding convolution's
  weight: MJP's pixel-in-patch shuffle, APRIL's inversion of the patch embedding, the attack metrics;
- ``channels_last``: (p, q, c), MAE's reconstruction target (official ``models_mae.py`` ``patchify``,
  einsum ``nchpwq->nhwpqc``).

Both are pure reshapes and permutes: the values are bit-identical to the input's.
"""
from __future__ import annotations

from typing import Literal

import torch

Layout = Literal["channels_first", "channels_last"]
LAYOUTS: tuple[Layout, ...] = ("channels_first", "channels_last")

# [B, C, gh, p, gw, q] -> [B, gh, gw, *patch dims] and back, per layout
_TO_PATCHES = {"channels_first": (0, 2, 4, 1, 3, 5), "channels_last": (0, 2, 4, 3, 5, 1)}
_TO_IMAGE = {"channels_first": (0, 3, 1, 4, 2, 5), "channels_last": (0, 5, 1, 3, 2, 4)}


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown patch layout {layout!r} (known: {', '.join(LAYOUTS)})")


def patchify(images: torch.Tensor, patch: int, layout: Layout = "channels_first") -> torch.Tensor:
    """[B, C, H, W] -> [B, N, C·P·P]: patches row-major over the grid, each flattened in ``layout``."""
    _check_layout(layout)
    b, c, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch}")
    gh, gw = h // patch, w // patch
    x = images.reshape(b, c, gh, patch, gw, patch).permute(_TO_PATCHES[layout])
    return x.reshape(b, gh * gw, c * patch * patch)


def unpatchify(patches: torch.Tensor, patch: int, size: tuple[int, int] | None = None,
               layout: Layout = "channels_first") -> torch.Tensor:
    """[B, N, C·P·P] -> [B, C, H, W], the inverse of :func:`patchify`; ``size`` (H, W) defaults to a
    square grid of N patches."""
    _check_layout(layout)
    b, n, d = patches.shape
    c = d // (patch * patch)
    if size is None:
        side = round(n ** 0.5) * patch
        size = (side, side)
    h, w = size
    gh, gw = h // patch, w // patch
    if gh * gw != n or c * patch * patch != d:
        raise ValueError(f"{n} patches of {d} values do not tile a {h}x{w} image with {patch}x{patch} patches")
    dims = (patch, patch, c) if layout == "channels_last" else (c, patch, patch)
    x = patches.reshape(b, gh, gw, *dims).permute(_TO_IMAGE[layout])
    return x.reshape(b, c, h, w)
