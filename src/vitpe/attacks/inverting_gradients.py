"""Inverting Gradients (Geiping et al., NeurIPS 2020) with breaching's ``invertinggradients`` defaults.

Written by hand after breaching's optimisation attacker (docs/FIDELITY.md row 46; breaching itself is
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
from dataclasses import dataclass

import torch
from torch import nn

from vitpe.attacks.matching import InversionTask, clamp_to_box, cosine_distance, initial_candidates, matching_step
from vitpe.attacks.registry import Reconstruction


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


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV: mean |horizontal forward difference| + mean |vertical forward difference|."""
    return (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()


def step_milestones(iterations: int) -> list[int]:
    """breaching's step-lr (``common.optimizer_lookup``): ×0.1 at ``max_iterations // 2.667``, ``// 1.6``
    and ``// 1.142``. Python's float floor division, not int(it / d): 1.6 is stored slightly above 1.6,
    so 24000 // 1.6 is 14999 where the rounded quotient 24000 / 1.6 is 15000."""
    return [int(iterations // divisor) for divisor in (2.667, 1.6, 1.142)]


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


def inverting_gradients(model: nn.Module, gradients: dict[str, torch.Tensor], labels: torch.Tensor,
                        shape: Sequence[int], box: tuple[torch.Tensor, torch.Tensor], settings: IGSettings,
                        seed: int, unk: torch.Tensor | None = None, dal_weight: float = 0.0,
                        progress: Callable[[int, float], None] | None = None) -> Reconstruction:
    """Reconstruct the client's (normalised) batch from its shared gradient; returns the best iterate."""
    task = InversionTask(gradients, labels, tuple(shape), seed, unk, dal_weight)
    report = None if progress is None else (lambda it, values: progress(it, float(values[0])))
    return inverting_gradients_batch(model, [task], box, settings, report)[0]


def inverting_gradients_batch(model: nn.Module, tasks: Sequence[InversionTask], box: tuple[torch.Tensor, torch.Tensor],
                             settings: IGSettings,
                             progress: Callable[[int, torch.Tensor], None] | None = None) -> list[Reconstruction]:
    """Inverting Gradients on independent ``tasks`` in one objective (matching.py); per task, the result
    of running it alone. The best iterate and the restart are chosen per task, by its own objective."""
    device = tasks[0].labels.device
    step = matching_step(model, tasks)
    start = time.perf_counter()

    def objective(x, grads, target):
        value = cosine_distance(grads, target) + settings.tv * total_variation(x)
        return value, value

    overall = overall_x = overall_trial = None
    for trial in range(settings.restarts):
        x = initial_candidates(tasks, settings.init, trial, device).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=settings.lr)
        sched = make_scheduler(opt, settings.schedule, settings.iterations)
        best = torch.full((len(tasks),), float("inf"), dtype=torch.float64, device=device)
        best_x = x.detach().clone()
        for it in range(settings.iterations):
            values, _, x_grad = step(x, objective)
            values = values.double()  # exact for float32 objectives, as the one-task path's Python floats
            improved = values < best  # NaN never improves
            best = torch.where(improved, values, best)
            best_x = torch.where(per_task(improved, x), x.detach(), best_x)
            opt.zero_grad(set_to_none=True)
            x.grad = shape_gradient(x_grad, settings.signed, it, settings.iterations)
            opt.step()
            if sched is not None:
                sched.step()
            if settings.boxed:
                clamp_to_box(x, box)
            if progress is not None:
                progress(it, values)
        if overall is None:
            overall, overall_x, overall_trial = best, best_x, torch.zeros(len(tasks), dtype=torch.long)
        else:  # restarts are chosen by the objective, never by ground truth
            better = best < overall
            overall, overall_x = torch.where(better, best, overall), torch.where(per_task(better, x), best_x, overall_x)
            overall_trial = torch.where(better.cpu(), trial, overall_trial)
    seconds = time.perf_counter() - start
    values = overall.tolist()
    return [Reconstruction(overall_x[i], values[i],
                               {"restart": int(overall_trial[i]), "seconds": seconds, "iterations": settings.iterations,
                                "restarts": settings.restarts, "batched": len(tasks)})
            for i in range(len(tasks))]


def per_task(flags: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[J] flags shaped to broadcast over [J, ...] tensors like ``like``."""
    return flags.view(-1, *([1] * (like.dim() - 1)))
