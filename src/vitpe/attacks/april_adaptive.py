"""The MJP-aware ("adaptive") closed form (docs/FIDELITY.md row 42): detect, exclude, solve the rest.

Written by hand (no published implementation). Under MJP every shuffled position reads the one shared
unknown PE row, so its row of the PE-table gradient is exactly zero and its token gradient is summed
into the unknown row's gradient. Plain APRIL then solves a rank-deficient system and every patch,
kept ones included, comes back as noise. This attacker

1. detects the shuffled positions as the zero rows of the PE-table gradient (no mask knowledge);
2. removes the image-independent DAL term from the kept rows (white box: it knows the DAL head, the
   detected mask and the loss weight of the client step);
3. solves Wᵀ G = Aᵀ Z over the kept tokens plus one extra unknown, the "mean shuffled token",
   whose token gradient is the unknown row's gradient (``use_unk_row``): exact when the shuffled
   tokens are alike, otherwise their spread is the residual;
4. inverts the patch embedding of the kept tokens (their own PE removed) and fills every shuffled
   position with the mean shuffled patch (the unknown row removed).

The kept patches are identifiable only up to adding zero-sum combinations of shuffled tokens (the
linear equations cannot tell them apart), so recovery of the kept positions degrades with the number
and diversity of the shuffled patches; ``recovered`` reports the positions solved from their own rows.
"""
from __future__ import annotations

import torch
from torch import nn

from vitpe.attacks.april import (ClosedFormResult, attention_moment, cls_input, invert_patch_embedding,
                                 patches_to_image, pe_and_token_gradient, resolve_rcond, solve_tokens)
from vitpe.attacks.threat import ClientUpdate, detect_unknown_rows, has_dal, named_param
from vitpe.errors import ConfigError


def dal_table_gradient(model: nn.Module, keep: torch.Tensor, weight: float) -> torch.Tensor:
    """d (weight · DAL(PE rows of the kept positions)) / d PE table, [1 + N, d] float64."""
    table = model.pe.table
    loss = weight * model.dal(table[0, 1:], keep.to(table.device)[None])
    grad, = torch.autograd.grad(loss, [table])
    return grad.detach().double().cpu().reshape(-1, table.shape[-1])


def april_adaptive(model: nn.Module, update: ClientUpdate, known_cls: bool = True, solver: str = "gelsd",
                   use_unk_row: bool = True, rel_tol: float = 1e-12,
                   rcond: float | str | None = "auto") -> ClosedFormResult:
    table, grad = pe_and_token_gradient(model, update)
    rcond = resolve_rcond(rcond, update)
    n = grad.shape[0] - 1
    detected = detect_unknown_rows(update, model, rel_tol)
    shuffled = torch.zeros(n, dtype=torch.bool) if detected is None else detected.cpu()
    kept = ~shuffled
    if update.dal_weight and has_dal(model):
        grad = grad - dal_table_gradient(model, kept, update.dal_weight)
    moment = attention_moment(model, update)
    rows = [grad[1:][kept]]
    unk_value = None
    if shuffled.any() and use_unk_row:
        try:
            name, unk = named_param(model, "pe.unk")
        except ConfigError:
            name = None
        if name is not None and name in update.gradients:
            rows.append(update.gradients[name].detach().double().cpu().reshape(1, -1))
            unk_value = unk.detach().double().cpu().reshape(-1)
    if known_cls:
        moment = moment - torch.outer(grad[0], cls_input(model, table))
    else:
        rows.insert(0, grad[:1])
    tokens = solve_tokens(torch.cat(rows), moment, solver, rcond)
    if not known_cls:
        tokens = tokens[1:]
    kept_tokens = tokens[: int(kept.sum())]
    embeddings = torch.zeros(n, grad.shape[1], dtype=torch.float64)
    embeddings[kept] = kept_tokens - table[1:][kept]
    patches = invert_patch_embedding(model, embeddings, solver, rcond)
    if unk_value is not None:  # every shuffled position shows the mean shuffled patch
        mean_patch = invert_patch_embedding(model, (tokens[-1] - unk_value)[None], solver, rcond)
        patches[shuffled] = mean_patch
    else:
        patches[shuffled] = 0.0  # the normalised-space mean colour
    image = patches_to_image(patches).to(update.fed.dtype)
    return ClosedFormResult(image, kept.clone(), {"detected_shuffled": int(shuffled.sum()),
                                                  "used_unk_row": unk_value is not None})
