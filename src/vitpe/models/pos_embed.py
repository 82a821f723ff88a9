"""Pluggable absolute position embeddings for the ViT backbone.

A position embedding (PE) component receives the token sequence right after the CLS token has been
prepended ([B, 1 + N, D], CLS first, patches row-major) and returns it with position information
added. ``mask`` ([B, N] or [1, N], bool, True = affected patch position) is the hook through which
methods change the PE of individual tokens: MJP substitutes a shared "unknown" row at shuffled
positions, AdPE perturbs masked positions. Components that have no use for a mask reject one, so a
method wired to the wrong PE fails loudly instead of silently training something else.

Every component keeps its absolute table (if any) in ``table`` with shape [1, 1 + N, D]: that tensor is
exactly timm's ``pos_embed``, which is how checkpoints stay loadable into a plain timm ViT.
"""
from __future__ import annotations

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from vitpe.errors import CheckpointError
from vitpe.models.registry import PE_CLASSES, pe_class, register_pe
from vitpe.models.spec import grid_size_of  # noqa: F401 (re-exported)

PE_KINDS = ("learnable", "sincos", "none")  # the built-in ones; vitpe.mjp adds "mjp" (models.registry)


class PositionEmbedding(nn.Module):
    """Base class. Subclasses implement ``forward(tokens, mask=None) -> tokens`` (module docstring)
    and declare what they are through the class attributes below."""

    #: the params.yaml ``pos_embed`` name it registers under
    name: str = ""
    #: whether forward uses a per-token mask (the ViT passes a jigsaw's mask only to such PEs)
    takes_mask: bool = False
    #: whether ``table`` is a learnable parameter (what MJP's DAL loss regresses)
    learnable_table: bool = False
    #: keyword options the constructor takes besides (grid_size, dim)
    options: tuple[str, ...] = ()
    #: local parameter names that must not get weight decay (the optimizer reads this)
    no_weight_decay: tuple[str, ...] = ()

    def __init__(self, grid_size: int, dim: int) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.num_patches = grid_size * grid_size
        self.dim = dim

    def _reject_mask(self, mask: torch.Tensor | None) -> None:
        if mask is not None:
            raise ValueError(f"{type(self).__name__} does not take a per-token mask")


# How a learnable PE table starts (the ``init`` option of every PE with a learnable table).
PE_INITS = ("trunc_normal", "normal")


def init_pe_table(table: torch.Tensor, init: str) -> None:
    """``trunc_normal``: DeiT's trunc-normal(0.02) (cut at ±2 absolute, so effectively N(0, 0.02));
    ``normal``: PyTorch's N(0, 1), what MJP's official table keeps (``nn.Embedding``'s own init)."""
    if init not in PE_INITS:
        raise ValueError(f"unknown position-embedding init {init!r} (known: {', '.join(PE_INITS)})")
    nn.init.normal_(table) if init == "normal" else nn.init.trunc_normal_(table, std=0.02)


@register_pe
class LearnablePosEmbed(PositionEmbedding):
    """DeiT's learnable absolute PE: one row per position incl. CLS, trunc-normal(0.02) init by default
    (``init="normal"``: MJP's N(0, 1), the PE-init ablation)."""

    name = "learnable"
    learnable_table = True
    options = ("init",)
    no_weight_decay = ("table",)

    def __init__(self, grid_size: int, dim: int, init: str = "trunc_normal") -> None:
        super().__init__(grid_size, dim)
        self.table = nn.Parameter(torch.zeros(1, self.num_patches + 1, dim))
        init_pe_table(self.table, init)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self._reject_mask(mask)
        return x + self.table


def sincos_2d(col: torch.Tensor, row: torch.Tensor, dim: int) -> torch.Tensor:
    """MAE's 2D sin-cos embedding of (possibly fractional) grid coordinates: [..., dim].

    Differentiable in the coordinates (AdPE's coordinate mode shifts them by a learned δ).
    Written out instead of using timm's ``build_sincos2d_pos_embed`` because timm orders the channels
    differently (row coordinate first, or sin-sin-cos-cos). MAE (util/pos_embed.py) builds the grid with
    the column coordinate first, so channels are [sin(col·ω) | cos(col·ω) | sin(row·ω) | cos(row·ω)]
    with ω_k = 1 / 10000^(k / (dim/4)).
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=col.dtype, device=col.device) / quarter)
    parts = []
    for pos in (col, row):
        angles = pos.unsqueeze(-1) * omega
        parts += [torch.sin(angles), torch.cos(angles)]
    return torch.cat(parts, dim=-1)


def grid_coords(grid_size: int, dtype: torch.dtype = torch.float32,
                device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(col, row) of every patch, row-major (token k = row * grid + col), each [grid_size**2]."""
    coords = torch.arange(grid_size, dtype=dtype, device=device)
    row, col = torch.meshgrid(coords, coords, indexing="ij")
    return col.reshape(-1), row.reshape(-1)


def sincos_2d_table(grid_size: int, dim: int) -> torch.Tensor:
    """MAE's fixed 2D sin-cos table, [1 + grid_size**2, dim], CLS row zeros (float64 math, float32 out)."""
    table = sincos_2d(*grid_coords(grid_size, torch.float64), dim)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), table]).to(torch.float32)


def resize_pos_embed(table: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[1, 1 + h·w, D] -> [1, 1 + grid[0]·grid[1], D]: bicubic on the patch rows, CLS row kept.

    As MAE's ``interpolate_pos_embed`` and mmseg's ``resize_pos_embed`` (align_corners=False, no
    antialiasing), through timm's ``resample_abs_pos_embed``; differentiable, so backbones may also
    use it at forward time for other input sizes.
    """
    side = int(round((table.shape[1] - 1) ** 0.5))
    if side * side != table.shape[1] - 1:
        raise CheckpointError(f"pos_embed has {table.shape[1] - 1} patch rows, not a square grid")
    if (side, side) == tuple(grid):
        return table
    return resample_abs_pos_embed(table, list(grid), [side, side], num_prefix_tokens=1,
                                  interpolation="bicubic", antialias=False)


@register_pe
class SinCosPosEmbed(PositionEmbedding):
    """Fixed 2D sin-cos PE (MAE layout). A persistent buffer: saved, never trained or decayed."""

    name = "sincos"

    def __init__(self, grid_size: int, dim: int) -> None:
        super().__init__(grid_size, dim)
        self.register_buffer("table", sincos_2d_table(grid_size, dim).unsqueeze(0))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self._reject_mask(mask)
        return x + self.table


@register_pe
class NoPosEmbed(PositionEmbedding):
    """No position information at all (a permutation-invariant ViT apart from CLS)."""

    name = "none"

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self._reject_mask(mask)
        return x


def build_pos_embed(kind: str, grid_size: int, dim: int, **options: object) -> PositionEmbedding:
    """The PE component named in params.yaml (``pos_embed``) with its ``options``."""
    cls = pe_class(kind)
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        raise ValueError(f"position embedding {kind!r} takes no option(s) {unknown} (its options: "
                         f"{', '.join(cls.options) or 'none'})")
    return cls(grid_size, dim, **options)


__all__ = [
    "PE_KINDS", "PE_CLASSES", "PE_INITS", "register_pe", "pe_class", "PositionEmbedding", "init_pe_table",
    "LearnablePosEmbed", "SinCosPosEmbed", "NoPosEmbed",
    "sincos_2d", "grid_coords", "sincos_2d_table", "resize_pos_embed", "build_pos_embed", "grid_size_of",
]
