"""What a supervised run trains: the plain classification objective, or the one a method contributes.

An objective prepares the model (extra heads, built right after the ViT), gives the module the
engine runs and DDP wraps, and computes the loss of a (Mixup'ed) batch. The trainer asks
:func:`objective_for`; methods are listed in ``METHODS`` and each claims the runs with its settings.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn

from vitpe.mjp.training import MJPObjective
from vitpe.models.vit import VisionTransformer
from vitpe.runs import SupervisedRun

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Objective(Protocol):
    find_unused_parameters: bool  # DDP: some parameters idle on some steps

    def prepare(self, vit: VisionTransformer) -> None: ...
    def training_module(self, vit: VisionTransformer) -> nn.Module: ...
    def loss(self, net: nn.Module, images: torch.Tensor, targets: torch.Tensor, epoch: int,
             criterion: Criterion) -> torch.Tensor: ...


class PlainObjective:
    """Cross-entropy (or the soft-target loss after Mixup) of the plain forward: DeiT, fine-tuning."""

    find_unused_parameters = False

    def prepare(self, vit: VisionTransformer) -> None:
        pass

    def training_module(self, vit: VisionTransformer) -> nn.Module:
        return vit

    def loss(self, net: nn.Module, images: torch.Tensor, targets: torch.Tensor, epoch: int,
             criterion: Criterion) -> torch.Tensor:
        return criterion(net(images), targets)


# method objectives: ``for_run(run)`` returns one for a run with that method's settings, else None
METHODS = (MJPObjective,)


def objective_for(run: SupervisedRun) -> Objective:
    claimed = [objective for method in METHODS if (objective := method.for_run(run)) is not None]
    if len(claimed) > 1:
        raise ValueError(f"{run.name}: settings of several methods ({', '.join(type(o).__name__ for o in claimed)})")
    return claimed[0] if claimed else PlainObjective()
