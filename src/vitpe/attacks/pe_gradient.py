"""A closed form on the STANDARD ViT block: the patches from the PE-table and patch-embedding gradients.

Written by hand (docs/FIDELITY.md row 71). The tokens entering block 0 are
t_i = W_p p_i + b_p + pe_i (patch i = 1..N, flattened in the conv weight's (c, p, q) order), and the
learnable absolute PE is added before any norm, so for one image

- the PE-table gradient row i IS the token gradient g_i = dL/dt_i (any block 0, norm1 and residuals
  included: unlike APRIL, nothing about the attention layer is used);
- the patch-embedding weight gradient is G_W = Σ_i g_i p_iᵀ = Gᵀ X, with G = [g_1..g_N] ([N, D]) and
  X = [p_1..p_N] ([N, 3P²]).

One least-squares solve of Gᵀ X = G_W (float64, LAPACK ``gelsd``, ``rcond`` as APRIL's) gives every
patch, exactly when N ≤ D and G has full rank (ViT-S/16: 196 ≤ 384; tiny: 64 = 64), in the normalised
input space the model was fed.

The MJP-aware variant (``pe_gradient_adaptive``): under MJP a shuffled position reads the shared
unknown row, so its PE-table gradient row is zero and the unknown row's gradient is the sum u of the
shuffled tokens' gradients. The attacker detects the zero rows (as ``april_adaptive`` does), removes the
image-independent DAL term from the kept rows, and solves for the kept patches plus one "mean shuffled
patch" m with u mᵀ standing for Σ_shuffled g_j p_jᵀ: exact when one position (or identical patches) is
shuffled, otherwise the spread of the shuffled patches leaks into the kept ones as residual.
"""
from __future__ import annotations

import torch
from torch import nn

from vitpe.attacks.april import (PATCH_NAMES, PE_NAMES, ClosedFormResult, lstsq, patches_to_image, resolve_rcond,
                                 shared_gradient)
from vitpe.attacks.april_adaptive import dal_table_gradient
from vitpe.attacks.threat import ClientUpdate, detect_unknown_rows, has_dal, named_param
from vitpe.errors import ConfigError

UNK_NAMES = ("pe.unk",)


def pe_table_name(model: nn.Module) -> str:
    """The name of the model's learnable absolute PE table, or a ConfigError naming its PE kind."""
    learnable = {name for name, _ in model.named_parameters()}
    for name in PE_NAMES:
        if name in learnable:
            return name
    kind = getattr(getattr(model, "pe", None), "name", None) or type(getattr(model, "pe", model)).__name__
    raise ConfigError(f"the PE-gradient closed form needs a learnable absolute PE table ({' or '.join(PE_NAMES)}); "
                      f"this model's PE is {kind!r}, which has no PE-table gradient")


def _check_batch(update: ClientUpdate) -> None:
    if update.fed.shape[0] != 1:
        raise ConfigError(f"the PE-gradient closed form needs batch size 1, got {update.fed.shape[0]}")


def token_gradients(model: nn.Module, update: ClientUpdate) -> torch.Tensor:
    """The patch tokens' gradients [N, D] (float64): the PE-table gradient without its CLS row."""
    _check_batch(update)
    name = pe_table_name(model)
    grad = shared_gradient(update, name)
    return grad.reshape(-1, grad.shape[-1])[1:]


def patch_weight_gradient(model: nn.Module, update: ClientUpdate) -> tuple[torch.Tensor, torch.Size]:
    """G_W ([D, 3P²], float64) and the conv weight's shape [D, 3, P, P] (its flattening order is the
    patches' ``channels_first`` layout)."""
    name, weight = named_param(model, *PATCH_NAMES)
    return shared_gradient(update, name).reshape(weight.shape[0], -1), weight.shape


def solve_patches(rows: torch.Tensor, weight_grad: torch.Tensor, solver: str = "gelsd",
                  rcond: float | None = None) -> torch.Tensor:
    """Patches X ([m, 3P²]) with rowsᵀ X = G_W, ``rows`` ([m, D]) their tokens' gradients."""
    return lstsq(rows.T, weight_grad, solver, rcond)


def pe_gradient_closed_form(model: nn.Module, update: ClientUpdate, solver: str = "gelsd",
                            rcond: float | str | None = "auto") -> ClosedFormResult:
    """Every patch position solved from its PE-table gradient row, no knowledge of MJP."""
    grads = token_gradients(model, update)
    weight_grad, shape = patch_weight_gradient(model, update)
    patches = solve_patches(grads, weight_grad, solver, resolve_rcond(rcond, update))
    image = patches_to_image(patches.reshape(-1, *shape[1:])).to(update.fed.dtype)
    return ClosedFormResult(image, torch.ones(patches.shape[0], dtype=torch.bool),
                            {"pe_grad_rank": int(torch.linalg.matrix_rank(grads)), "unknowns": grads.shape[0]})


def _unknown_row_gradient(model: nn.Module, update: ClientUpdate) -> torch.Tensor | None:
    """The gradient of MJP's shared unknown PE row ([1, D]), None when the model has none or it got none."""
    try:
        name, _ = named_param(model, *UNK_NAMES)
    except ConfigError:
        return None
    return shared_gradient(update, name).reshape(1, -1) if name in update.gradients else None


def pe_gradient_adaptive(model: nn.Module, update: ClientUpdate, solver: str = "gelsd", use_unk_row: bool = True,
                         rcond: float | str | None = "auto", rel_tol: float = 1e-12) -> ClosedFormResult:
    """Detect the positions served by MJP's unknown row, solve for the kept patches (plus the mean
    shuffled patch from the unknown row's gradient) and fill the shuffled positions with that mean."""
    grads = token_gradients(model, update)
    weight_grad, shape = patch_weight_gradient(model, update)
    detected = detect_unknown_rows(update, model, rel_tol)
    shuffled = torch.zeros(grads.shape[0], dtype=torch.bool) if detected is None else detected.cpu()
    kept = ~shuffled
    if update.dal_weight and has_dal(model):  # the DAL term's table gradient does not involve the image
        grads = grads - dal_table_gradient(model, kept, update.dal_weight)[1:]
    unk = _unknown_row_gradient(model, update) if (shuffled.any() and use_unk_row) else None
    rows = grads[kept] if unk is None else torch.cat([grads[kept], unk])
    solved = solve_patches(rows, weight_grad, solver, resolve_rcond(rcond, update))
    patches = torch.zeros(grads.shape[0], solved.shape[1], dtype=torch.float64)  # 0: the normalised mean colour
    patches[kept] = solved[: int(kept.sum())]
    if unk is not None:  # every shuffled position shows the mean shuffled patch
        patches[shuffled] = solved[-1]
    image = patches_to_image(patches.reshape(-1, *shape[1:])).to(update.fed.dtype)
    return ClosedFormResult(image, kept.clone(), {"detected_shuffled": int(shuffled.sum()),
                                                  "used_unk_row": unk is not None})
