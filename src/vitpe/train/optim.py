"""AdamW with DeiT's weight-decay exclusions, LARS for linear probing, and timm's per-iteration warm-up +
cosine schedule."""
from __future__ import annotations

import torch
from timm.optim import Lars, create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch import nn

from vitpe.errors import ConfigError
from vitpe.models.vit import unwrap
from vitpe.runs import ClassifierRecipe, PretrainRecipe


def scaled_lrs(recipe: ClassifierRecipe | PretrainRecipe) -> tuple[float, float, float]:
    """(lr, warmup_lr, min_lr) scaled linearly by global batch / lr_batch_divisor (official main.py)."""
    scale = recipe.batch_size / recipe.lr_batch_divisor
    return recipe.base_lr * scale, recipe.warmup_lr * scale, recipe.min_lr * scale


def build_optimizer(
    model: nn.Module | list[dict],
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    layer_decay: float | None = None,
    fused: bool = False,
) -> torch.optim.Optimizer:
    """AdamW; no weight decay on 1-D params, biases and ``model.no_weight_decay()`` (cls_token, PE), or
    on the parameter groups given instead of a model (``weight_decay`` where a group sets none).

    timm's factory builds the groups from ``no_weight_decay()``, as the official optimizer.py does;
    with ``layer_decay`` it also scales each layer's lr by decay^(top − layer id) following the
    model's ``group_matcher`` (MAE's lr_decay.py; the scheduler applies each group's ``lr_scale``).
    ``fused``: torch's fused AdamW kernel (CPU and CUDA), else its per-parameter loop.
    """
    return create_optimizer_v2(model, "adamw", lr=lr, weight_decay=weight_decay, betas=betas, eps=eps,
                               layer_decay=layer_decay, **({"fused": True} if fused else {}))


def build_lars(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """LARS (timm's) on the trainable (head) parameters, as MAE's linear probing: the trust ratio adapts
    weights only, never biases."""
    params = [p for p in unwrap(model).parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim > 1], "always_adapt": True},
              {"params": [p for p in params if p.ndim <= 1], "always_adapt": False, "weight_decay": 0.0}]
    return Lars([g for g in groups if g["params"]], lr=lr, momentum=0.9, weight_decay=weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int,
    warmup_lr: float,
    min_lr: float,
    warmup_prefix: bool = False,
) -> CosineLRScheduler:
    """Cosine with a linear warm-up, stepped per iteration (call ``step_update(step)`` before step ``step``).

    ``warmup_prefix=False`` (DeiT, the official MJP lr_scheduler.py): the cosine spans the whole run,
    warm-up included, so it is already slightly past its peak when warm-up ends. ``True`` (MAE's
    lr_sched.py): warm-up first, then a half-cycle cosine over the remaining steps.
    """
    if warmup_prefix and total_steps <= warmup_steps:
        raise ConfigError(f"the cosine after warm-up needs steps: {total_steps} steps in all, {warmup_steps} "
                          "of warm-up (epochs must exceed warmup_epochs)")
    return CosineLRScheduler(
        optimizer,
        t_initial=total_steps - warmup_steps if warmup_prefix else total_steps,
        lr_min=min_lr,
        warmup_t=warmup_steps,
        warmup_lr_init=warmup_lr,
        warmup_prefix=warmup_prefix,
        cycle_limit=1,
        t_in_epochs=False,
    )


def weight_decay_of(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, float]:
    """Parameter name -> the weight decay the optimizer applies to it (for checks and tests)."""
    group_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    return {name: group_of[id(p)] for name, p in model.named_parameters() if id(p) in group_of}
