"""iRPE relative position encoding as the official AdPE code configures it (position_embed/irpe*.py).

iRPE (Wu et al., ICCV 2021): product method, contextual on keys, one table shared by all heads,
piecewise bucketing with ratio 1.9 (α = 1.9, β = 3.8, γ = 15.2), so row and column offsets each map
to {-3, ..., 3}; bucket (r + 3)·7 + (c + 3) gives 49 buckets plus one for every pair that involves
CLS (50). The attention logit of query i and key j gains q_i · r[bucket(i, j)]; tables start at zero.
Hand-written: no maintained library ships iRPE (timm's relative-position modules are Swin/BEiT-style
biases, not contextual product tables).

Two lookups:
- ``discrete``: the table gathered at integer bucket ids (iRPE proper; MAE+ RPE and the RPE
  embedding adversary).
- ``interp``: AdPE's "interpolated RPE" (coordinate adversary, AdPE code position_embed/irpe_adv_coord.py):
  the 49 product columns as a 7×7 image sampled bilinearly at the unrounded piecewise index, so offsets
  may be fractional and a per-block 2-vector δ can shift them differentiably.
  ``interp_variant="faithful"`` copies the official parametrisation (÷β = 3.8, align_corners=False,
  zero padding, row offset fed as the sampler's x); ``"corrected"`` lands integer offsets on bucket
  centres (docs/FIDELITY.md row 57).

Adversaries (``adversary``) act on the query rows given by the context's ``query_mask`` (AdPE's
masked tokens): ``embedding`` adds one δ of shape (1, head_dim, 1) to every bucket — a constant
shift of each softmax row, i.e. a no-op, as in the official code (docs/FIDELITY.md row 56);
``embedding_per_bucket`` gives δ one column per bucket (the alternative); ``coordinate`` shifts the
(row, col) offsets by δ (2,).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm
from timm.layers.attention import Attention
from timm.models.vision_transformer import Block
from torch import nn

from vitpe.models.spec import (ADVERSARIES, INTERP_VARIANTS, LOOKUPS, RPE_KINDS, RPE_LOOKUPS,  # noqa: F401
                               RPEConfig, RPEOptions)

RATIO = 1.9
ALPHA, BETA, GAMMA = 1.0 * RATIO, 2.0 * RATIO, 8.0 * RATIO
BETA_INT = int(BETA)  # 3: the largest bucket offset
SIDE = 2 * BETA_INT + 1  # 7 buckets per axis
CLS_BUCKET = SIDE * SIDE  # 49: pairs that involve CLS
NUM_BUCKETS = CLS_BUCKET + 1

@dataclass
class RPEContext:
    """What an RPE block needs besides the tokens: the patch grid and the perturbed query rows."""

    grid: tuple[int, int]
    has_cls: bool = True
    query_mask: torch.Tensor | None = None  # [B, N] bool over all tokens (CLS False); None: no perturbation


def piecewise_index(offset: torch.Tensor, rounded: bool = True) -> torch.Tensor:
    """iRPE's piecewise index of a row or column offset (official irpe.py piecewise_index).

    |x| ≤ α: x; otherwise sign(x)·(α + ln(|x|/α)/ln(γ/α)·(β − α)). Rounded (discrete iRPE) the far part
    is rounded, capped at β and truncated to an integer, so it never exceeds β_int = 3; unrounded
    (interpolated RPE) it is returned as is.
    """
    offset = offset.float()
    mag = offset.abs()
    far = ALPHA + torch.log(mag.clamp(min=ALPHA) / ALPHA) / math.log(GAMMA / ALPHA) * (BETA - ALPHA)
    if rounded:
        far = far.round().clamp(max=BETA).trunc()
        near = offset.round()
    else:
        near = offset
    return torch.where(mag <= ALPHA, near, torch.sign(offset) * far)


def grid_offsets(grid: tuple[int, int], device: torch.device | None = None) -> torch.Tensor:
    """(row, col) offsets pos_i − pos_j of every patch pair on a row-major grid: [L, L, 2] float."""
    rows, cols = torch.meshgrid(torch.arange(grid[0], device=device), torch.arange(grid[1], device=device),
                                indexing="ij")
    pos = torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=-1).float()
    return pos[:, None, :] - pos[None, :, :]


@lru_cache(maxsize=32)
def _bucket_ids(grid: tuple[int, int], has_cls: bool, device: torch.device) -> torch.Tensor:
    index = piecewise_index(grid_offsets(grid, device)).long() + BETA_INT
    buckets = index[..., 0] * SIDE + index[..., 1]
    if has_cls:
        buckets = F.pad(buckets, (1, 0, 1, 0), value=CLS_BUCKET)
    return buckets


def bucket_ids(grid: tuple[int, int], has_cls: bool = True, device: torch.device | str = "cpu") -> torch.Tensor:
    """Product bucket id of every token pair, [N, N] long (N = 1 + L with CLS; CLS pairs: bucket 49)."""
    return _bucket_ids(tuple(grid), has_cls, torch.device(device))


def _pad_cls(values: torch.Tensor, cls_value: torch.Tensor) -> torch.Tensor:
    """[C, L, L] -> [C, 1 + L, 1 + L] with ``cls_value`` [C] in the CLS row and column."""
    c, l, _ = values.shape
    out = cls_value[:, None, None].expand(c, l + 1, l + 1).clone()
    out[:, 1:, 1:] = values
    return out


class ContextualProductRPE(nn.Module):
    """One block's iRPE table (``lookup_table_weight`` [1, head_dim, 50], the official name) and δ."""

    def __init__(self, head_dim: int, config: RPEConfig) -> None:
        super().__init__()
        self.config = config
        self.head_dim = head_dim
        self.lookup_table_weight = nn.Parameter(torch.zeros(1, head_dim, NUM_BUCKETS))
        shapes = {"embedding": (1, head_dim, 1), "embedding_per_bucket": (1, head_dim, NUM_BUCKETS),
                  "coordinate": (2,)}
        if config.adversary is not None:  # zero-initialised, as in the official AdPE code
            self.adv_delta = nn.Parameter(torch.zeros(shapes[config.adversary]))

    def forward(self, q: torch.Tensor, ctx: RPEContext) -> torch.Tensor:
        """The additive logit term [B, H, N, N] for queries ``q`` [B, H, N, head_dim]."""
        mask = ctx.query_mask if self.config.adversary is not None else None
        if self.config.lookup == "discrete":
            return self._discrete(q, ctx, mask)
        return self._interpolated(q, ctx, mask)

    def _discrete(self, q: torch.Tensor, ctx: RPEContext, mask: torch.Tensor | None) -> torch.Tensor:
        lut = q @ self.lookup_table_weight[0]  # [B, H, N, 50]
        if mask is not None:  # q·(r + δ) = q·r + q·δ on the perturbed rows; [.., 1] for the shared δ
            lut = lut + (q @ self.adv_delta[0]) * mask[:, None, :, None].to(q.dtype)
        ids = bucket_ids(ctx.grid, ctx.has_cls, q.device)
        return lut.gather(-1, ids.expand(*lut.shape[:2], -1, -1))

    def _sample(self, offsets: torch.Tensor, has_cls: bool) -> torch.Tensor:
        """Interpolated table at (row, col) offsets [L, L, 2]: [C, N, N]."""
        table = self.lookup_table_weight[0]
        image = table[:, :CLS_BUCKET].reshape(1, self.head_dim, SIDE, SIDE)  # (row bucket, col bucket)
        index = piecewise_index(offsets, rounded=False)
        if self.config.interp_variant == "faithful":
            # official: clamp to ±β, ÷β, row offset as the sampler's x (column axis), corners not aligned
            norm = index.clamp(-BETA, BETA) / BETA
            sample_grid, align = norm, False
        else:
            norm = index.clamp(-BETA_INT, BETA_INT) / BETA_INT
            sample_grid, align = norm.flip(-1), True  # x = column offset, y = row offset
        sampled = F.grid_sample(image, sample_grid[None].to(image.dtype), mode="bilinear",
                                padding_mode="zeros", align_corners=align)[0]
        return _pad_cls(sampled, table[:, CLS_BUCKET]) if has_cls else sampled

    def _interpolated(self, q: torch.Tensor, ctx: RPEContext, mask: torch.Tensor | None) -> torch.Tensor:
        offsets = grid_offsets(ctx.grid, q.device)
        term = torch.einsum("bhic,cij->bhij", q, self._sample(offsets, ctx.has_cls))
        if mask is None:
            return term
        shifted = torch.einsum("bhic,cij->bhij", q, self._sample(offsets + self.adv_delta, ctx.has_cls))
        return torch.where(mask[:, None, :, None], shifted, term)


class RPEAttention(Attention):
    """timm's Attention (same parameter names) plus an iRPE term on the keys (``rpe_k``)."""

    def __init__(self, dim: int, num_heads: int, config: RPEConfig, qkv_bias: bool = True) -> None:
        super().__init__(dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.rpe_k = ContextualProductRPE(self.head_dim, config)

    def forward(self, x: torch.Tensor, ctx: RPEContext) -> torch.Tensor:  # type: ignore[override]
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q_rpe = q * self.scale if self.rpe_k.config.scale_rpe_query else q
        bias = self.rpe_k(q_rpe, ctx).to(q.dtype)
        # SDPA scales q·kᵀ itself and adds the bias: logits = (q·kᵀ)·scale + RPE term
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                           dropout_p=self.attn_drop.p if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, -1)))


class RPEBlock(Block):
    """timm's pre-norm Block whose attention takes an RPEContext."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, config: RPEConfig,
                 drop_path: float = 0.0) -> None:
        super().__init__(dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=drop_path,
                         norm_layer=LayerNorm, act_layer=nn.GELU)
        self.attn = RPEAttention(dim, num_heads, config)

    def forward(self, x: torch.Tensor, ctx: RPEContext) -> torch.Tensor:  # type: ignore[override]
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), ctx)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


def rpe_config(kind: str | None, **options: object) -> RPEConfig | None:
    """The RPE of a params ``rpe`` value: null (none), ``irpe`` (discrete) or ``irpe_interp``."""
    if kind is None:
        if options:
            raise ValueError(f"RPE options {sorted(options)} given without an RPE")
        return None
    if kind not in RPE_LOOKUPS:
        raise ValueError(f"unknown rpe {kind!r} (known: null, {', '.join(RPE_LOOKUPS)})")
    return RPEConfig(lookup=RPE_LOOKUPS[kind], **options)  # type: ignore[arg-type]
