"""AdPE: adversarial position embeddings for MAE+ pretraining (docs/FIDELITY.md rows 52-58).

One adversarial parameter δ (every parameter named ``adv_delta``), shared by all samples, crops and
processes, persistent and never reset, is updated by simultaneous gradient descent–ascent: the single
optimizer step that descends on the weights ascends on δ, then δ is projected onto an ε-ball.

- absolute PE, ``embedding``: δ (1, 1, D) ~ N(0, 0.02²) replaces the mask token, so every masked
  encoder input is δ + PE(position);
- absolute PE, ``coordinate``: δ (2,) = (Δcol, Δrow) in patch units, zero-initialised; masked
  positions get PE(col + Δcol, row + Δrow), visible tokens, CLS and the decoder stay unperturbed;
- relative PE: one δ per iRPE module in every encoder and decoder block (vitpe.models.irpe).

Ascent is written as a gradient sign flip inside an ordinary AdamW group (exactly equivalent to the
official negative learning rate with Adam moments, docs/FIDELITY.md row 52), with the same warm-up +
cosine schedule scaled by adv_lr / lr. Hand-written: the paper's contribution.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from vitpe.models.pos_embed import grid_coords, sincos_2d

APE_MODES = ("embedding", "coordinate")
NORMS = ("l2", "linf", "none")
ADV_NAME = "adv_delta"


class AbsoluteAdversary(nn.Module):
    """The APE adversary of one MAE+ encoder: its δ and how it changes the masked encoder inputs."""

    def __init__(self, mode: str, dim: int, grid_size: int) -> None:
        super().__init__()
        if mode not in APE_MODES:
            raise ValueError(f"unknown AdPE mode {mode!r} (known: {', '.join(APE_MODES)})")
        self.mode = mode
        self.dim = dim
        self.grid_size = grid_size
        if mode == "embedding":
            self.adv_delta = nn.Parameter(torch.zeros(1, 1, dim))
            nn.init.normal_(self.adv_delta, std=0.02)
        else:
            self.adv_delta = nn.Parameter(torch.zeros(2))

    def shifted_pos_embed(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Coordinate mode: PE(col + δ0, row + δ1) for every patch, [L, D] (differentiable in δ)."""
        col, row = grid_coords(self.grid_size, dtype=self.adv_delta.dtype, device=self.adv_delta.device)
        return sincos_2d(col + self.adv_delta[0], row + self.adv_delta[1], self.dim).to(dtype)


def adversarial_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Every δ of ``model``, looked up by name (``...adv_delta``)."""
    return [(name, p) for name, p in model.named_parameters() if name.split(".")[-1] == ADV_NAME]


@torch.no_grad()
def project_(delta: torch.Tensor, norm: str, eps: float) -> None:
    """In place: L2 ball over the whole tensor (p · min(ε, ‖p‖)/‖p‖), L∞ box (clamp), or nothing."""
    if norm == "l2":
        length = delta.norm()
        if length > eps:
            delta.mul_(eps / length)
    elif norm == "linf":
        delta.clamp_(-eps, eps)
    elif norm != "none":
        raise ValueError(f"unknown AdPE norm {norm!r} (known: {', '.join(NORMS)})")


def adversarial_group(params: Iterable[nn.Parameter], lr_scale: float) -> dict:
    """The optimizer group of the δs: no weight decay (official adv_wd 0), lr scaled by adv_lr/lr."""
    return {"params": list(params), "weight_decay": 0.0, "lr_scale": lr_scale, "adversarial": True}


def attach_ascent(optimizer: torch.optim.Optimizer, norm: str, eps: float) -> None:
    """Make the optimizer's ``adversarial`` groups ascend and stay in their ε-ball.

    A pre-step hook negates their gradients (after DDP averaging, unscaling and clipping), so the
    Adam update climbs the loss; a post-step hook projects each δ of a group whose lr is non-zero.
    As the official optimizer (it projects only groups with lr < 0), a step at lr 0 (the first
    warm-up step) leaves δ where it is, even outside the ball (docs/FIDELITY.md row 53).
    """
    groups = [g for g in optimizer.param_groups if g.get("adversarial")]

    def flip(opt: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        for group in groups:
            for p in group["params"]:
                if p.grad is not None:  # the official optimizer has no guard here
                    p.grad.neg_()

    def project(opt: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        for group in groups:
            if group["lr"] > 0:  # the ascent lr (official: the negative lr of the group is below 0)
                for p in group["params"]:
                    project_(p, norm, eps)

    optimizer.register_step_pre_hook(flip)
    optimizer.register_step_post_hook(project)


@torch.no_grad()
def delta_norms(model: nn.Module) -> dict[str, float]:
    """For the per-step log: mean L2 norm and max |entry| over all δs (empty without an adversary)."""
    deltas = [p for _, p in adversarial_parameters(model)]
    if not deltas:
        return {}
    return {"adv_l2": float(torch.stack([d.norm() for d in deltas]).mean()),
            "adv_linf": float(max(d.abs().max() for d in deltas))}
