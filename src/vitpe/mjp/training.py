"""MJP in training: when inputs are shuffled (the schedule) and the loss MJP adds (official main.py).

:class:`MJPObjective` is what the supervised trainer asks for (vitpe.train.objectives) for a run with
MJP settings: it gives the ViT its DAL head, wraps it in the shuffled forward DDP sees, and computes
``criterion(logits, targets) + λ(epoch) · DAL`` on a shuffled draw. Draw order (bitwise resumption and
parity with the official code): Mixup first (the trainer), then ``torch.rand(1)``, then the shuffle.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vitpe.mjp.dal import attach_dal, dal_weight
from vitpe.mjp.forward import ShuffledForward
from vitpe.mjp.jigsaw import Jigsaw, draw_jigsaw
from vitpe.mjp.settings import DALSettings, JigsawSettings, UnknownPESettings
from vitpe.models.spec import ViTSpec
from vitpe.models.vit import VisionTransformer


@dataclass(frozen=True)
class JigsawSchedule:
    """When and how training inputs are shuffled (official MJP code, main.py).

    From ``start_epoch`` (the end of LR warm-up by default), an iteration is shuffled when
    ``torch.rand(1) > 1 - apply_prob`` (official: ``> 0.5``); draws use the global RNGs, which the
    engine seeds and checkpoints, so resumed runs shuffle identically.
    """

    mode: str
    grid: int
    patch_size: int
    ratio: float
    apply_prob: float
    start_epoch: int
    per_sample: bool

    @classmethod
    def of(cls, cfg: JigsawSettings, model: ViTSpec) -> JigsawSchedule:
        """``cfg.start_epoch`` resolved (vitpe.runs fills in the end of warm-up)."""
        return cls(mode=cfg.mode, grid=model.grid_size, patch_size=model.patch_size, ratio=cfg.ratio,
                   apply_prob=cfg.apply_prob, start_epoch=cfg.start_epoch, per_sample=cfg.per_sample)

    def draw(self, epoch: int, batch: int) -> Jigsaw | None:
        if epoch < self.start_epoch or not torch.rand(1).item() > 1 - self.apply_prob:
            return None
        return draw_jigsaw(self.mode, self.grid, batch if self.per_sample else 1, self.ratio, self.patch_size)


class MJPObjective:
    """Shuffled inputs, the unknown PE row and the DAL loss of a supervised run."""

    def __init__(self, model: ViTSpec, epochs: int, warmup_epochs: int, jigsaw: JigsawSettings | None = None,
                 dal: DALSettings | None = None, unk: UnknownPESettings | None = None) -> None:
        self.schedule = JigsawSchedule.of(jigsaw, model) if jigsaw is not None else None
        self.dal = dal
        self.epochs, self.warmup_epochs = epochs, warmup_epochs
        # DDP: the unknown row idles on unshuffled steps (the official code sets it too)
        self.find_unused_parameters = unk is not None

    @classmethod
    def for_run(cls, run: Any) -> MJPObjective | None:
        """The objective of a vitpe.runs.SupervisedRun with MJP settings; None without any."""
        if run.jigsaw is None and run.dal is None and run.unk is None:
            return None
        return cls(run.model, run.recipe.epochs, run.recipe.warmup_epochs, run.jigsaw, run.dal, run.unk)

    def prepare(self, vit: VisionTransformer) -> None:
        """Add what MJP trains besides the ViT (right after the ViT is built: same RNG order)."""
        if self.dal is not None:
            attach_dal(vit, self.dal.head)

    def training_module(self, vit: VisionTransformer) -> nn.Module:
        return ShuffledForward(vit)

    def loss(self, net: nn.Module, images: torch.Tensor, targets: torch.Tensor, epoch: int,
             criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``net``: the training module (possibly DDP-wrapped); images and targets after Mixup."""
        jigsaw = self.schedule.draw(epoch, len(images)) if self.schedule is not None else None
        if jigsaw is not None:
            jigsaw = jigsaw.to(images.device)
        if self.dal is None:
            return criterion(net(images, jigsaw), targets)
        logits, dal = net(images, jigsaw, with_dal=True)
        weight = dal_weight(epoch, self.epochs, self.warmup_epochs, self.dal.weight, self.dal.final_ratio)
        return criterion(logits, targets) + weight * dal
