"""MJP's position embedding: a learnable absolute table plus one shared "unknown" row (pos_embed ``mjp``).

Registered in the PE registry (vitpe.models.registry) under ``mjp``; ``vitpe.mjp`` announces it, so
any run that reads MJP's settings can build it.
"""
from __future__ import annotations

import torch
from torch import nn

from vitpe.models.pos_embed import PositionEmbedding, init_pe_table, register_pe


@register_pe
class UnknownPosEmbed(PositionEmbedding):
    """MJP's PE: a learnable absolute table plus one shared "unknown" row for shuffled positions.

    Official MJP code, ``models/vit_timm.py``: a 198-row ``nn.Embedding`` whose last row (197)
    replaces the PE of every masked (shuffled) patch position; CLS and kept positions keep their own
    rows. Here the 197 regular rows are ``table`` (timm's ``pos_embed``) and the unknown row is ``unk``
    (saved as ``pos_embed_unk``). Faithful defaults: PyTorch's N(0, 1) init of every row (the official
    code skips the trunc-normal init once unk is on) and weight decay on the table (its parameter name
    ``pos_embed.weight`` escapes the skip list). Both are options (docs/FIDELITY.md rows 14, 15).
    """

    name = "mjp"
    takes_mask = True
    learnable_table = True
    options = ("init", "weight_decay")

    def __init__(self, grid_size: int, dim: int, init: str = "normal", weight_decay: bool = True) -> None:
        super().__init__(grid_size, dim)
        self.table = nn.Parameter(torch.empty(1, self.num_patches + 1, dim))
        self.unk = nn.Parameter(torch.empty(1, 1, dim))
        for param in (self.table, self.unk):
            init_pe_table(param, init)
        self.no_weight_decay = () if weight_decay else ("table", "unk")

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            return x + self.table
        # CLS never takes the unknown row: pad the patch mask with False in front
        full = torch.cat([mask.new_zeros(mask.shape[0], 1), mask], dim=1).unsqueeze(-1)
        return x + torch.where(full, self.unk, self.table)
