"""APRIL's closed-form attack on an APRIL-compatible ViT (Lu et al., CVPR 2022).

Written by hand (breaching's ``AprilAttacker`` takes gradients by position index and its model breaks
on timm 1.x, docs/FIDELITY.md row 38); every tensor is looked up by parameter name. Batch size 1,
float64 on the CPU, least squares with LAPACK's ``gelsd`` (breaching's solver), singular values below
the gradient's precision dropped (``rcond``, :func:`resolve_rcond`):

1. the PE-table gradient A ([1 + N, d]) equals dL/dz, the gradient of the tokens entering block 0
   (the PE is added to them);
2. with block 0 free of norm1 and residuals, all of dL/dz flows through its qkv projection W
   ([3d, d], gradient G): Wᵀ G = Aᵀ Z, a linear system for the tokens Z, solved by least squares;
3. subtract the PE, drop CLS, and invert the patch embedding e = W_p vec(patch) + b_p (least squares
   again; minimum norm when d < 3P², e.g. ViT-S/16), then re-tile the patches.

``known_cls`` (default) uses the white-box fact that the CLS token entering block 0 is
``cls_token + PE[0]``: its term is moved to the right-hand side, so only the N patch tokens are
unknown (N ≤ d instead of N + 1 ≤ d; at the tiny scale N = d = 64). breaching solves for all 1 + N
rows (``known_cls: false``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vitpe.attacks.threat import ClientUpdate, named_param
from vitpe.errors import ConfigError
from vitpe.models.patches import unpatchify

PE_NAMES = ("pe.table", "pos_embed")
QKV_NAMES = ("blocks.0.attn.qkv.weight",)
PATCH_NAMES = ("patch_embed.proj.weight",)
PATCH_BIAS_NAMES = ("patch_embed.proj.bias",)
CLS_NAMES = ("cls_token",)


@dataclass
class ClosedFormResult:
    images: torch.Tensor  # [1, 3, H, W], normalised space (what the model was fed)
    recovered: torch.Tensor  # [N] bool: positions solved from their own equations
    info: dict[str, Any] = field(default_factory=dict)


def lstsq(a: torch.Tensor, b: torch.Tensor, solver: str = "gelsd", rcond: float | None = None) -> torch.Tensor:
    """min ||a x - b|| (minimum-norm x when underdetermined), float64 on the CPU; singular values
    below ``rcond`` x the largest count as zero (None: LAPACK's float64 default)."""
    return torch.linalg.lstsq(a.double().cpu(), b.double().cpu(), rcond=rcond, driver=solver).solution


def resolve_rcond(rcond: float | str | None, update: ClientUpdate) -> float | None:
    """``"auto"``: the machine epsilon of the shared gradient's dtype (1.2e-7 for float32).

    The token system is badly conditioned (condition numbers 1e7-1e9 measured on the tiny trained
    models); directions below the precision the client computed in are noise, so the solve drops them.
    """
    if rcond == "auto":
        dtype = next(iter(update.gradients.values())).dtype
        return float(torch.finfo(dtype).eps)
    return None if rcond is None else float(rcond)


def shared_gradient(update: ClientUpdate, name: str) -> torch.Tensor:
    """The shared gradient of parameter ``name``, float64 on the CPU (a ConfigError when it has none)."""
    if name not in update.gradients:
        raise ConfigError(f"the shared gradient has no entry for {name} (is the parameter used?)")
    return update.gradients[name].detach().double().cpu()


def pe_and_token_gradient(model: nn.Module, update: ClientUpdate) -> tuple[torch.Tensor, torch.Tensor]:
    """(PE table [1 + N, d], its gradient [1 + N, d]) in float64; the gradient is dL/dz of one image only."""
    if update.fed.shape[0] != 1:
        raise ConfigError(f"the APRIL closed form needs batch size 1, got {update.fed.shape[0]}")
    name, table = named_param(model, *PE_NAMES)
    grad = shared_gradient(update, name).reshape(-1, table.shape[-1])
    return table.detach().double().cpu().reshape(-1, table.shape[-1]), grad


def attention_moment(model: nn.Module, update: ClientUpdate) -> torch.Tensor:
    """b = Wᵀ G = Σ_q,k,v W_*ᵀ G_* = (dL/dz)ᵀ Z  ([d, d]) from block 0's qkv weight and its gradient."""
    name, weight = named_param(model, *QKV_NAMES)
    return weight.detach().double().cpu().T @ shared_gradient(update, name)


def cls_input(model: nn.Module, table: torch.Tensor) -> torch.Tensor:
    """The CLS token entering block 0 (cls_token + PE row 0), known to a white-box attacker."""
    _, cls = named_param(model, *CLS_NAMES)
    return cls.detach().double().cpu().reshape(-1) + table[0]


def solve_tokens(rows: torch.Tensor, moment: torch.Tensor, solver: str = "gelsd",
                 rcond: float | None = None) -> torch.Tensor:
    """Tokens Z ([m, d]) with rowsᵀ Z = moment, ``rows`` ([m, d]) their token gradients."""
    return lstsq(rows.T, moment, solver, rcond)


def invert_patch_embedding(model: nn.Module, embeddings: torch.Tensor, solver: str = "gelsd",
                           rcond: float | None = None) -> torch.Tensor:
    """Patch pixels [N, 3, P, P] (normalised space) from patch embeddings [N, d]: W_p x + b_p = e."""
    _, weight = named_param(model, *PATCH_NAMES)
    _, bias = named_param(model, *PATCH_BIAS_NAMES)
    w = weight.detach().double().cpu()
    flat = lstsq(w.reshape(w.shape[0], -1), (embeddings - bias.detach().double().cpu()).T, solver, rcond).T
    return flat.reshape(-1, *w.shape[1:])


def patches_to_image(patches: torch.Tensor) -> torch.Tensor:
    """[N, C, P, P] row-major patches of a square grid -> [1, C, H, W]."""
    return unpatchify(patches.flatten(1)[None], patches.shape[-1])


def april_closed_form(model: nn.Module, update: ClientUpdate, known_cls: bool = True,
                      solver: str = "gelsd", rcond: float | str | None = "auto") -> ClosedFormResult:
    """APRIL as published: every patch position solved from the PE gradient, no knowledge of MJP."""
    table, grad = pe_and_token_gradient(model, update)
    rcond = resolve_rcond(rcond, update)
    moment = attention_moment(model, update)
    if known_cls:
        moment = moment - torch.outer(grad[0], cls_input(model, table))
        tokens = solve_tokens(grad[1:], moment, solver, rcond)
    else:
        tokens = solve_tokens(grad, moment, solver, rcond)[1:]
    patches = invert_patch_embedding(model, tokens - table[1:], solver, rcond)
    image = patches_to_image(patches).to(update.fed.dtype)
    rank = int(torch.linalg.matrix_rank(grad[1:] if known_cls else grad))
    return ClosedFormResult(image, torch.ones(patches.shape[0], dtype=torch.bool),
                            {"pe_grad_rank": rank, "unknowns": grad.shape[0] - int(known_cls)})
