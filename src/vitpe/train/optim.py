"""AdamW with DeiT's weight-decay exclusions and timm's per-iteration warm-up + cosine schedule."""
from __future__ import annotations

from collections.abc import Mapping

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch import nn


def scaled_lrs(recipe: Mapping) -> tuple[float, float, float]:
    """(lr, warmup_lr, min_lr) scaled linearly by global batch / lr_batch_divisor (official main.py)."""
    scale = recipe["batch_size"] / recipe["lr_batch_divisor"]
    return recipe["base_lr"] * scale, recipe["warmup_lr"] * scale, recipe["min_lr"] * scale


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.Optimizer:
    """AdamW; no weight decay on 1-D params, biases and ``model.no_weight_decay()`` (cls_token, PE).

    timm's factory builds the two groups from ``no_weight_decay()``, as the official optimizer.py does.
    """
    return create_optimizer_v2(model, "adamw", lr=lr, weight_decay=weight_decay, betas=betas, eps=eps)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int,
    warmup_lr: float,
    min_lr: float,
) -> CosineLRScheduler:
    """Cosine over all ``total_steps`` iterations with a linear warm-up, stepped per iteration.

    As the official lr_scheduler.py: ``t_initial`` is the whole run (warm-up included, not prefixed),
    so the cosine is already slightly past its peak when warm-up ends. Call ``step_update(step)``
    before optimizer step ``step`` (0-based).
    """
    return CosineLRScheduler(
        optimizer,
        t_initial=total_steps,
        lr_min=min_lr,
        warmup_t=warmup_steps,
        warmup_lr_init=warmup_lr,
        warmup_prefix=False,
        cycle_limit=1,
        t_in_epochs=False,
    )


def weight_decay_of(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, float]:
    """Parameter name -> the weight decay the optimizer applies to it (for checks and tests)."""
    group_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    return {name: group_of[id(p)] for name, p in model.named_parameters() if id(p) in group_of}
