"""MJP's settings (params.yaml ``supervised.<exp>.jigsaw`` / ``dal`` / ``unk``) with the official
code's defaults (train.sh, main.py; docs/FIDELITY.md rows 9, 13-16)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JigsawSettings:
    """Which inputs are shuffled, how and when (vitpe.mjp.jigsaw, the training schedule)."""

    mode: str  # mjp | patches | pixels (vitpe.mjp.jigsaw.MODES)
    ratio: float = 0.1  # MJP's gamma
    apply_prob: float = 0.5  # share of the iterations shuffled (official: torch.rand(1) > 0.5)
    start_epoch: int | None = None  # None: the end of LR warm-up (resolved by vitpe.runs)
    per_sample: bool = False  # official: one draw per batch


@dataclass(frozen=True)
class DALSettings:
    """The dense absolute localization head and its loss weight schedule (vitpe.mjp.dal)."""

    head: str = "nonlinear"
    weight: float = 0.01  # lambda
    final_ratio: float = 0.5  # lambda's cosine ends at final_ratio x lambda


@dataclass(frozen=True)
class UnknownPESettings:
    """Options of MJP's PE table with the shared unknown row (pos_embed ``mjp``)."""

    init: str = "normal"  # official N(0, 1); trunc_normal: DeiT's std 0.02 (as the learnable PE's ``init``)
    weight_decay: bool = True  # official: the table and the row are decayed
