"""The gradient-matching step of the optimisation attacks, for one reconstruction or many at once.

A *task* is one independent reconstruction: one client update's shared gradient (batch 1 by default,
the threat model), the attacker's labels, the candidate's shape and seed. Each iteration of Inverting
Gradients or GradViT needs, per task, the objective (a function of the candidate and of the gradient
the candidate induces) and its gradient w.r.t. the candidate: a forward, a parameter gradient with a
differentiable graph and the backward through it (double backward), about 10k dispatched operations
for a 12-block ViT whatever the image count.

- one task: plain autograd, the reference path (the attacks' numbers as published here);
- several tasks: ``torch.func``: ``vmap`` over the tasks of the per-task ``grad`` of the client loss
  w.r.t. the parameters, the objectives summed and differentiated w.r.t. the stacked candidates. Each
  task's objective depends on its own candidate only, so the gradient of the sum gives every task its
  own gradient, and one iteration's dispatch serves every task. The tasks stay independent: the
  client's batch, labels and priors are each task's own, as in the one-task path.

It also holds what both optimisation attacks share around the step: the gradient distances
(breaching's global cosine, MJP's MSE), the seeded candidate initialisation and the image-box
projection.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from vitpe.attacks.threat import client_loss, parameter_gradients

#: (candidate [*shape], parameter gradients it induces, shared gradients) -> (objective, reported value)
TaskObjective = Callable[[torch.Tensor, list[torch.Tensor], list[torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]
#: (candidates [J, *shape], objective) -> (objectives [J], reported values [J], d objective_j / d x_j [J, *shape])
MatchingStep = Callable[[torch.Tensor, TaskObjective], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class InversionTask:
    """One reconstruction: what the server saw of one client step, and how the attacker replays it."""

    gradients: dict[str, torch.Tensor]  # parameter name -> shared gradient
    labels: torch.Tensor  # [B] the attacker's labels (B: the client's batch)
    shape: tuple[int, ...]  # candidate shape [B, 3, H, W]
    seed: int  # initialisation seed
    unk: torch.Tensor | None = None  # [N] bool, the attacker's unknown-PE mask
    dal_weight: float = 0.0  # weight of the DAL term the attacker simulates

    def signature(self, model: nn.Module) -> tuple:
        """Tasks with equal signatures can share one vmapped objective (same tensors, same loss terms)."""
        return (tuple(match_target(self.gradients, model)[0]), self.shape, tuple(self.labels.shape),
                self.unk is None, self.dal_weight)


def cosine_distance(grads: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> torch.Tensor:
    """breaching's CosineSimilarity objective: 1 - global inner product / (global norms)."""
    dot = sum((g * t).sum() for g, t in zip(grads, target))
    norm_g = torch.sqrt(sum(g.pow(2).sum() for g in grads))
    norm_t = torch.sqrt(sum(t.pow(2).sum() for t in target))
    return 1 - dot / (norm_g * norm_t)


def gradient_distance(grads: Sequence[torch.Tensor], target: Sequence[torch.Tensor], match: str) -> torch.Tensor:
    """``cosine``: :func:`cosine_distance`; ``mse``: Σ over parameters of the mean squared difference
    (MJP's GradViT replication)."""
    if match == "cosine":
        return cosine_distance(grads, target)
    if match == "mse":
        return sum(torch.mean((g - t) ** 2) for g, t in zip(grads, target))
    raise ValueError(f"unknown gradient match {match!r} (known: cosine, mse)")


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


def initial_candidates(tasks: Sequence[InversionTask], init: str, seed_offset: int,
                       device: torch.device) -> torch.Tensor:
    """[J, *shape]: each task's own seeded initialisation (seed + ``seed_offset``), in its gradients' dtype."""
    return torch.stack([initial_images(task.shape, init, torch.Generator().manual_seed(task.seed + seed_offset), device)
                        .to(next(iter(task.gradients.values())).dtype) for task in tasks])


@torch.no_grad()
def clamp_to_box(x: torch.Tensor, box: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Project the candidates in place onto the per-channel image box (normalised space)."""
    x.copy_(torch.maximum(torch.minimum(x, box[1]), box[0]))


def match_target(update_gradients: dict[str, torch.Tensor], model: nn.Module) -> tuple[list[str], list[torch.Tensor]]:
    """The shared gradients, in parameter order (the parameters the client's loss actually used)."""
    names = [n for n, _ in model.named_parameters() if n in update_gradients]
    return names, [update_gradients[n] for n in names]


def matching_step(model: nn.Module, tasks: Sequence[InversionTask]) -> MatchingStep:
    """The per-iteration evaluation for ``tasks``: autograd for one task, ``torch.func`` for several."""
    if not tasks:
        raise ValueError("no attack tasks")
    if len(tasks) == 1:
        return _autograd_step(model, tasks[0])
    return _vmap_step(model, tasks)


def _autograd_step(model: nn.Module, task: InversionTask) -> MatchingStep:
    names, target = match_target(task.gradients, model)

    def step(x: torch.Tensor, objective: TaskObjective) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        candidate = x[0]
        loss = client_loss(model, candidate, task.labels, task.unk, task.dal_weight)
        found = parameter_gradients(model, loss, names, create_graph=True)
        grads = [found.get(n, torch.zeros_like(t)) for n, t in zip(names, target)]
        value, reported = objective(candidate, grads, target)
        x_grad, = torch.autograd.grad(value, [x])
        return value.detach()[None], reported.detach()[None], x_grad

    return step


def _layer_norm(x: torch.Tensor, normalized_shape: Sequence[int], weight: torch.Tensor | None = None,
                bias: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """``F.layer_norm`` from differentiable elementwise ops and means (biased variance, as the kernel)."""
    dims = tuple(range(-len(normalized_shape), 0))
    centred = x - x.mean(dims, keepdim=True)
    out = centred * torch.rsqrt(centred.pow(2).mean(dims, keepdim=True) + eps)
    if weight is not None:
        out = out * weight
    return out if bias is None else out + bias


class _CompositeLayerNorm(TorchFunctionMode):
    """Route ``F.layer_norm`` to :func:`_layer_norm` inside vmap.

    The batching rule of the fused layer-norm backward treats its saved mean and rstd as constants, so
    differentiating a vmapped gradient through it loses their dependence on the input (measured here:
    1e-3 relative error in float64; pytorch/functorch#534). The composite is exact, at the cost of a
    few more operations per norm.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.layer_norm:
            return _layer_norm(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


class _ClientLoss(nn.Module):
    """``client_loss`` as a module, so ``torch.func.functional_call`` can swap the model's parameters."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, labels: torch.Tensor, unk: torch.Tensor | None,
                dal_weight: float) -> torch.Tensor:
        return client_loss(self.model, images, labels, unk, dal_weight)


def _vmap_step(model: nn.Module, tasks: Sequence[InversionTask]) -> MatchingStep:
    from torch.func import functional_call, grad, vmap

    signatures = {task.signature(model) for task in tasks}
    if len(signatures) > 1:
        raise ValueError("tasks in one objective must share their shapes, used parameters, mask kind and DAL "
                         "weight (group them with InversionTask.signature)")
    names, _ = match_target(tasks[0].gradients, model)
    targets = [torch.stack([task.gradients[n] for task in tasks]) for n in names]
    labels = torch.stack([task.labels for task in tasks])
    unk = None if tasks[0].unk is None else torch.stack([task.unk for task in tasks])
    dal_weight = tasks[0].dal_weight
    loss_module = _ClientLoss(model)
    params = {n: p.detach() for n, p in model.named_parameters() if n in set(names)}

    def parameter_grads(candidate, task_labels, task_unk) -> list[torch.Tensor]:
        def loss(p):
            return functional_call(loss_module, {f"model.{n}": v for n, v in p.items()},
                                   (candidate, task_labels, task_unk, dal_weight))

        found = grad(loss)(params)
        return [found[n] for n in names]

    def step(x: torch.Tensor, objective: TaskObjective) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        def task_objective(candidate, task_labels, task_unk, target):
            return objective(candidate, parameter_grads(candidate, task_labels, task_unk), target)

        def total(candidates):
            values, reported = vmap(task_objective, in_dims=(0, 0, None if unk is None else 0, 0))(
                candidates, labels, unk, targets)
            return values.sum(), (values.detach(), reported.detach())

        with _CompositeLayerNorm():
            x_grad, (values, reported) = grad(total, has_aux=True)(x.detach())
        return values, reported, x_grad

    return step


def group_tasks(model: nn.Module, tasks: Sequence[InversionTask], chunk: int) -> list[list[int]]:
    """Task indices in groups of at most ``chunk`` with equal signatures (in task order within a group)."""
    groups: dict[tuple, list[int]] = {}
    for i, task in enumerate(tasks):
        groups.setdefault(task.signature(model), []).append(i)
    return [idx[start:start + chunk] for idx in groups.values() for start in range(0, len(idx), chunk)]
