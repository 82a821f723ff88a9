"""MAE's per-sample random masking (official models_mae.py random_masking) and the patch layout."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from vitpe.models import patches


@dataclass(frozen=True)
class RandomMask:
    """One mask per sample: ``mask`` [B, L] bool (True = removed) in the original token order."""

    keep: torch.Tensor  # [B, len_keep] indices of the visible tokens, in shuffled order
    restore: torch.Tensor  # [B, L] argsort of the shuffle: unshuffles [visible | removed]
    mask: torch.Tensor


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """MAE's len_keep = int(L · (1 − ratio)): 49 of 196 at 0.75, 12 of 49 (AdPE's 7×7 crops)."""
    return int(num_patches * (1 - mask_ratio))


def random_mask(batch: int, num_patches: int, mask_ratio: float, device: torch.device | str = "cpu",
                noise: torch.Tensor | None = None) -> RandomMask:
    """Uniform noise per token, argsort, keep the first len_keep (official); ``noise`` fixes the draw."""
    if noise is None:
        noise = torch.rand(batch, num_patches, device=device)
    shuffle = torch.argsort(noise, dim=1)
    restore = torch.argsort(shuffle, dim=1)
    keep = shuffle[:, :num_visible(num_patches, mask_ratio)]
    mask = torch.ones(batch, num_patches, dtype=torch.bool, device=noise.device)
    mask[:, :keep.shape[1]] = False
    return RandomMask(keep=keep, restore=restore, mask=torch.gather(mask, 1, restore))


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B, 3, H, W] -> [B, L, p·p·3] in MAE's layout (row-major patches, (p, q, c) inside a patch)."""
    return patches.patchify(images, patch_size, "channels_last")


def masked_patch_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                      norm_pix_loss: bool = True) -> torch.Tensor:
    """Per-patch MSE averaged over removed patches only; with ``norm_pix_loss`` each target patch is
    normalised by its own mean and (unbiased) variance, eps 1e-6 (official forward_loss)."""
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    per_patch = ((pred - target) ** 2).mean(dim=-1)
    weights = mask.to(per_patch.dtype)
    return (per_patch * weights).sum() / weights.sum()
