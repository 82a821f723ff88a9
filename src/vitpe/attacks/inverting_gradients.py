"""Inverting Gradients (Geiping et al., NeurIPS 2020) with breaching's ``invertinggradients`` defaults.

Written by hand after breaching's optimisation attacker (reference §3.2-3.3; breaching itself is
unmaintained and incompatible with timm 1.x): a candidate batch, initialised randn in normalised
space, minimises

    1 - <g(x), g*> / (||g(x)|| ||g*||)  +  tv · TV(x)

with one *global* cosine over every shared parameter gradient (not per layer), g(x) taken with a
differentiable graph. Adam (lr 0.1) steps on the *sign* of the candidate's gradient ("hard"), the
candidate is clamped to the per-channel image box after every step, the LR drops ×0.1 at
max_it/2.667, max_it/1.6, max_it/1.142, the iterate with the lowest objective is kept, and restarts
are chosen by the objective, never by ground truth. TV: mean |dx| + mean |dy| of forward differences
(inner and outer exponent 1); breaching's convolution pads the border with zeros, this does not.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vitpe.attacks.threat import client_loss, parameter_gradients


@dataclass(frozen=True)
class IGSettings:
    iterations: int = 24000
    lr: float = 0.1
    tv: float = 0.2
    restarts: int = 1
    signed: str = "hard"  # hard (sign) | soft (tanh, scaled down over time) | none
    boxed: bool = True
    init: str = "randn"  # randn | rand | zeros
    schedule: str = "step-lr"  # step-lr | cosine-decay | none


@dataclass
class OptimisationResult:
    images: torch.Tensor  # normalised space
    objective: float
    info: dict[str, Any] = field(default_factory=dict)


def cosine_distance(grads: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> torch.Tensor:
    """breaching's CosineSimilarity objective: 1 - global inner product / (global norms)."""
    dot = sum((g * t).sum() for g, t in zip(grads, target))
    norm_g = torch.sqrt(sum(g.pow(2).sum() for g in grads))
    norm_t = torch.sqrt(sum(t.pow(2).sum() for t in target))
    return 1 - dot / (norm_g * norm_t)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV: mean |horizontal forward difference| + mean |vertical forward difference|."""
    return (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()


def initial_images(shape: Sequence[int], init: str, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    if init == "randn":
        x = torch.randn(shape, generator=generator)
    elif init == "rand":
        x = torch.rand(shape, generator=generator)
    elif init == "zeros":
        x = torch.zeros(shape)
    else:
        raise ValueError(f"unknown init {init!r} (known: randn, rand, zeros)")
    return x.to(device)


def step_milestones(iterations: int) -> list[int]:
    """breaching's step-lr: ×0.1 at max_it/2.667, max_it/1.6, max_it/1.142 (integer part)."""
    return [int(iterations / 2.667), int(iterations / 1.6), int(iterations / 1.142)]


def make_scheduler(opt: torch.optim.Optimizer, kind: str, iterations: int):
    if kind == "step-lr":
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=step_milestones(iterations), gamma=0.1)
    if kind == "cosine-decay":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iterations, eta_min=0.0)
    if kind == "none":
        return None
    raise ValueError(f"unknown schedule {kind!r} (known: step-lr, cosine-decay, none)")


def shape_gradient(grad: torch.Tensor, signed: str, it: int, iterations: int) -> torch.Tensor:
    if signed == "hard":
        return grad.sign()
    if signed == "soft":
        return torch.tanh(grad) * (1 - it / iterations)
    return grad


def match_target(update_gradients: dict[str, torch.Tensor], model: nn.Module) -> tuple[list[str], list[torch.Tensor]]:
    """The shared gradients, in parameter order (the parameters the client's loss actually used)."""
    names = [n for n, _ in model.named_parameters() if n in update_gradients]
    return names, [update_gradients[n] for n in names]


def inverting_gradients(model: nn.Module, gradients: dict[str, torch.Tensor], labels: torch.Tensor,
                        shape: Sequence[int], box: tuple[torch.Tensor, torch.Tensor], settings: IGSettings,
                        seed: int, unk: torch.Tensor | None = None, dal_weight: float = 0.0,
                        progress: Callable[[int, float], None] | None = None) -> OptimisationResult:
    """Reconstruct the client's (normalised) batch from its shared gradient; returns the best iterate."""
    device = labels.device
    names, target = match_target(gradients, model)
    start = time.perf_counter()
    best_overall: OptimisationResult | None = None
    for trial in range(settings.restarts):
        gen = torch.Generator().manual_seed(seed + trial)
        x = initial_images(shape, settings.init, gen, device).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=settings.lr)
        sched = make_scheduler(opt, settings.schedule, settings.iterations)
        best, best_x = float("inf"), x.detach().clone()
        for it in range(settings.iterations):
            loss = client_loss(model, x, labels, unk, dal_weight)
            found = parameter_gradients(model, loss, names, create_graph=True)
            grads = [found.get(n, torch.zeros_like(t)) for n, t in zip(names, target)]
            objective = cosine_distance(grads, target) + settings.tv * total_variation(x)
            x_grad, = torch.autograd.grad(objective, [x])
            value = float(objective.detach())
            if value < best:
                best, best_x = value, x.detach().clone()
            opt.zero_grad(set_to_none=True)
            x.grad = shape_gradient(x_grad, settings.signed, it, settings.iterations)
            opt.step()
            if sched is not None:
                sched.step()
            if settings.boxed:
                with torch.no_grad():
                    x.copy_(torch.maximum(torch.minimum(x, box[1]), box[0]))
            if progress is not None:
                progress(it, value)
        if best_overall is None or best < best_overall.objective:
            best_overall = OptimisationResult(best_x, best, {"restart": trial})
    best_overall.info.update(seconds=time.perf_counter() - start, iterations=settings.iterations,
                             restarts=settings.restarts)
    return best_overall
