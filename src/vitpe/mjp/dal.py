"""Dense Absolute Localization (DAL): regress each position's grid coordinates from its PE row.

Official MJP ``ssl_mjp/dlocr.py`` + ``losses.py`` (docs/FIDELITY.md row 16): the input is the PE table
itself (not image tokens), the targets are raw (row, col) in [0, grid - 1] (not normalised), the loss is
the L1 error averaged over the kept positions and both coordinates, and its weight λ follows a per-epoch
schedule: linear 0 -> λ over the warm-up epochs, then cosine down to ``final_ratio`` · λ at the end.
Kept means every position except those served by MJP's unknown row (``models/vit_timm.py`` passes
``1 - unk_mask``; without an unknown row, all ones, shuffled or not).
"""
from __future__ import annotations

import math

import torch
from timm.layers import trunc_normal_
from torch import nn

HEADS = ("linear", "nonlinear")


class DenseLocalization(nn.Module):
    """The DAL regressor: Linear(D, 2), or Linear(D, D) -> ReLU -> Linear(D, 2) (train.sh's choice)."""

    def __init__(self, dim: int, grid: int, head: str = "nonlinear") -> None:
        super().__init__()
        if head == "linear":
            self.mlp = nn.Sequential(nn.Linear(dim, 2))
        elif head == "nonlinear":
            self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 2))
        else:
            raise ValueError(f"unknown DAL head {head!r} (known: {', '.join(HEADS)})")
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):  # official: _init_vit_weights on the module
                trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        index = torch.arange(grid * grid)
        self.register_buffer("coords", torch.stack([index // grid, index % grid], 1).float(), persistent=False)

    def forward(self, patch_pe: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Mean L1 error over kept positions; ``patch_pe`` [N, D] (no CLS row), ``keep`` [rows, N] bool
        (None: every position)."""
        error = (self.mlp(patch_pe) - self.coords).abs().mean(-1)  # [N], image independent
        if keep is None:
            return error.mean()
        weights = keep.to(error.dtype)
        return (weights * error).sum() / weights.sum().clamp_min(1)


def dal_weight(epoch: int, epochs: int, warmup_epochs: int, base: float, final_ratio: float = 0.5) -> float:
    """λ for ``epoch`` (official utils.cosine_scheduler, per epoch, warm-up from 0).

    Warm-up ``linspace(0, base, warmup_epochs)``; then ``final + (base - final)/2 · (1 + cos(π t / T))``
    with t counted from the end of warm-up and T = epochs - warmup_epochs.
    """
    if epoch < warmup_epochs:
        return 0.0 if warmup_epochs == 1 else base * epoch / (warmup_epochs - 1)
    final = base * final_ratio
    span = max(epochs - warmup_epochs, 1)
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * (epoch - warmup_epochs) / span))


def attach_dal(vit: nn.Module, head: str) -> DenseLocalization:
    """Give ``vit`` its DAL head (saved under ``dal.*``). Built after the ViT's own initialisation, as
    in the official code (the head draws its init from the RNG after every ViT parameter)."""
    vit.dal = DenseLocalization(vit.embed_dim, vit.grid_size, head)
    return vit.dal


def dal_head(vit: nn.Module) -> DenseLocalization | None:
    """The DAL head of ``vit``, None without one."""
    return getattr(vit, "dal", None)
