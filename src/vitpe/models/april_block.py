"""The "APRIL-compatible" first transformer block: attention, then norm2 + MLP, no norm1, no residuals.

APRIL's closed form (Lu et al., CVPR 2022) is exact only when every bit of the gradient reaching the
tokens of block 0 flows through its qkv projection: breaching's ``ModifiedBlock``
(analytic_attack.py) therefore computes ``mlp(norm2(attn(x)))`` with neither the pre-attention
LayerNorm nor the two residual connections. breaching's own class reads ``block.drop_path``, which
timm 1.x no longer has (docs/FIDELITY.md row 38), so the project builds its own here from a timm
``Block``: it keeps the block's ``attn``, ``norm2`` and ``mlp`` modules (same timm key names,
minus ``norm1``) and drops the rest. Written by hand: no library ships this variant.
"""
from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import nn

FIRST_BLOCKS = ("standard", "april")


class AprilBlock(nn.Module):
    """``x -> mlp(norm2(attn(x)))``; built from a timm Block whose attention/MLP modules it reuses."""

    def __init__(self, block: Block) -> None:
        super().__init__()
        self.attn = block.attn
        self.norm2 = block.norm2
        self.mlp = block.mlp

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:  # e.g. attn_mask, an RPE context
        return self.mlp(self.norm2(self.attn(x, *args, **kwargs)))


def apply_first_block(blocks: nn.ModuleList, kind: str) -> None:
    """Replace ``blocks[0]`` in place for ``kind`` ``"april"``; ``"standard"`` leaves timm's block."""
    if kind not in FIRST_BLOCKS:
        raise ValueError(f"unknown first_block {kind!r} (known: {', '.join(FIRST_BLOCKS)})")
    if kind == "april":
        blocks[0] = AprilBlock(blocks[0])
