"""Settings of MAE's decoder and AdPE's adversary (params.yaml ``scales.<scale>.pretrain.decoder`` and
``pretrain.<exp>.adversary``) with the official defaults; torch-free, read by vitpe.runs."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DecoderConfig:
    """MAE's decoder: its width, depth, heads and MLP ratio."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class AdversarySettings:
    """params.yaml ``pretrain.<exp>.adversary`` with the official defaults (docs/FIDELITY.md rows 54, 56):
    the whole-tensor L2 ball of radius 1.0 and, for the RPE embedding δ, one δ for all buckets (a no-op)."""

    mode: str  # embedding | coordinate
    target: str = "absolute"  # absolute (the PE) | relative (iRPE): set from the experiment's rpe
    norm: str = "l2"
    eps: float = 1.0
    per_bucket: bool = False
