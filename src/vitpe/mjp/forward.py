"""MJP's shuffled forward pass, composed from the ViT's public pieces (vitpe.models.vit).

Pixels are permuted inside patches before the patch embedding (the pixels mode), tokens right after
it; a PE that takes a per-token mask (MJP's unknown row, vitpe.mjp.pos_embed) gets the shuffled
positions, any other PE simply stays with the slot a shuffled patch moved into, as in the official
code. Without a jigsaw every function here is the plain forward.

DDP must see the DAL loss inside a module forward (its gradient reaches the PE table and the DAL
head): training wraps the ViT in :class:`ShuffledForward`, which DDP wraps; the weights are saved
from the inner ViT, keys unchanged.
"""
from __future__ import annotations

import torch
from torch import nn

from vitpe.mjp.dal import dal_head
from vitpe.mjp.jigsaw import Jigsaw, permute_pixels_in_patches, permute_tokens
from vitpe.models.vit import VisionTransformer


def unknown_positions(vit: VisionTransformer, jigsaw: Jigsaw | None) -> torch.Tensor | None:
    """[rows, N] bool: the positions served by the PE's unknown row under ``jigsaw``; None when this
    PE has no such row (official: ``unk_mask`` exists only with ``--use-unk-pos``)."""
    return jigsaw.unk if jigsaw is not None and vit.pe.takes_mask else None


def embed_shuffled(vit: VisionTransformer, images: torch.Tensor, jigsaw: Jigsaw | None) -> torch.Tensor:
    """Patch-embed (shuffled by ``jigsaw``), prepend CLS, add the PE: [B, 3, H, W] -> [B, 1 + N, D]."""
    if jigsaw is not None and jigsaw.pixel_order is not None:
        images = permute_pixels_in_patches(images, jigsaw.pixel_order, vit.patch_size)
    tokens = vit.patch_tokens(images)
    if jigsaw is not None:
        tokens = permute_tokens(tokens, jigsaw.order)
    return vit.add_cls_and_pe(tokens, unknown_positions(vit, jigsaw))


def shuffled_features(vit: VisionTransformer, images: torch.Tensor, jigsaw: Jigsaw | None) -> torch.Tensor:
    """The final-norm tokens [B, 1 + N, D] of the shuffled input."""
    return vit.encode(embed_shuffled(vit, images, jigsaw))


def shuffled_logits(vit: VisionTransformer, images: torch.Tensor, jigsaw: Jigsaw | None) -> torch.Tensor:
    return vit.forward_head(shuffled_features(vit, images, jigsaw))


def dal_loss(vit: VisionTransformer, jigsaw: Jigsaw | None) -> torch.Tensor:
    """The DAL loss of ``vit``'s PE table under ``jigsaw``.

    DAL regresses the positions that keep their own PE row: with MJP's unknown row all but the
    shuffled ones, with any other PE every position, shuffled or not (official keep-mask
    ``1 - unk_mask``, all ones without it; docs/FIDELITY.md row 16).
    """
    head = dal_head(vit)
    if head is None:
        raise ValueError("this model has no DAL head (vitpe.mjp.dal.attach_dal)")
    unknown = unknown_positions(vit, jigsaw)
    return head(vit.pe.table[0, 1:], None if unknown is None else ~unknown)


class ShuffledForward(nn.Module):
    """The module training runs (and DDP wraps): logits of the shuffled input, and the DAL loss."""

    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, images: torch.Tensor, jigsaw: Jigsaw | None = None,
                with_dal: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        logits = shuffled_logits(self.vit, images, jigsaw)
        return (logits, dal_loss(self.vit, jigsaw)) if with_dal else logits
