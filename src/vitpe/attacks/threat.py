"""The threat model: what the honest-but-curious server sees (docs/FIDELITY.md rows 43-45).

FedSGD, one local step: the client computes the gradient of its training loss on one batch (batch 1
by default) with the model in eval mode (no dropout or drop-path, breaching's default) and shares it;
the server knows every weight (white box) and either the labels or recovers them from the classifier
bias gradient. Two client settings (docs/FIDELITY.md row 44):

- ``plain``: the original image, plain forward ("MJP-trained weights, plain forward");
- ``shuffled``: the image MJP-jigsaw-shuffled (block mask at ``shuffle_ratio``, one seeded draw per
  image, identical for every model so comparisons are paired); a model whose PE takes a mask (MJP's
  unknown row) gets it, and a model with a DAL head adds its loss ("MJP at train time").

The attack code is generic over ``nn.Module`` classifiers (``model(images) -> logits``); only the
project's ViT receives a jigsaw mask or a DAL term. Parameters are always addressed by name.
"""
from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vitpe.errors import ConfigError
from vitpe.mjp.forward import dal_loss, shuffled_logits
from vitpe.mjp.jigsaw import Jigsaw, draw_jigsaw, shuffle_pixels

CLIENT_MODES = ("plain", "shuffled")
LABEL_STRATEGIES = ("known", "recovered")


@dataclass(frozen=True)
class ThreatModel:
    batch_size: int = 1
    labels: str = "recovered"  # known | recovered (bias-based)
    shuffle_ratio: float = 0.1  # MJP's training gamma (train.sh)
    dal_loss: bool = True  # a DAL head's loss is part of the shuffled client step
    attacker_mask: str = "detected"  # optimisation attacks: use the detected unknown-PE mask, or "none"
    head_bias: str = "head.bias"  # classifier bias, for label recovery

    @classmethod
    def from_params(cls, cfg: Mapping[str, Any]) -> "ThreatModel":
        threat = cls(**{k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg})
        if threat.labels not in LABEL_STRATEGIES:
            raise ConfigError(f"params.yaml: attacks.threat.labels must be one of {LABEL_STRATEGIES}, "
                              f"got {threat.labels!r}")
        if threat.attacker_mask not in ("detected", "none"):
            raise ConfigError(f"params.yaml: attacks.threat.attacker_mask must be detected or none, "
                              f"got {threat.attacker_mask!r}")
        return threat


@dataclass
class ClientUpdate:
    """What one client step exposes, plus the ground truth the metrics need (never shown to attacks)."""

    fed: torch.Tensor  # [B, 3, H, W] normalised images the model saw (shuffled in the shuffled mode)
    labels: torch.Tensor  # [B] true labels
    gradients: dict[str, torch.Tensor]  # parameter name -> gradient (parameters without one left out)
    mode: str
    unk: torch.Tensor | None = None  # [N] bool, positions given MJP's unknown PE row (model took it)
    shuffled: torch.Tensor | None = None  # [N] bool, positions the jigsaw selected (shuffled mode)
    dal_weight: float = 0.0  # weight of the DAL term in the client loss (0: none)
    extra: dict[str, Any] = field(default_factory=dict)


def prepare_model(model: nn.Module) -> nn.Module:
    """Eval mode, every parameter differentiable, and timm's fused attention off.

    The optimisation attacks differentiate through a gradient (double backward); torch's fused CPU
    attention kernels do not implement that, timm's explicit softmax path does.
    """
    model.eval()
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    for param in model.parameters():
        param.requires_grad_(True)
    return model


def named_param(model: nn.Module, *names: str) -> tuple[str, nn.Parameter]:
    """The first parameter present among ``names`` (the project's and timm's spellings)."""
    params = dict(model.named_parameters())
    for name in names:
        if name in params:
            return name, params[name]
    raise ConfigError(f"the attacked model has no parameter named {' or '.join(names)}")


def takes_mask(model: nn.Module) -> bool:
    return bool(getattr(getattr(model, "pe", None), "takes_mask", False))


def has_dal(model: nn.Module) -> bool:
    return getattr(model, "dal", None) is not None


def client_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None,
                unk: torch.Tensor | None = None, dal_weight: float = 0.0,
                soft_labels: torch.Tensor | None = None) -> torch.Tensor:
    """The client's training loss: mean cross-entropy (+ dal_weight x DAL) on ``images``.

    ``unk`` ([N] bool) reaches only a PE that takes a mask; the token order is the identity because
    ``images`` are already shuffled in pixel space (equivalent for a stride-P patch embedding).
    """
    jigsaw = None
    if unk is not None and takes_mask(model):
        n = unk.numel()
        jigsaw = Jigsaw(order=torch.arange(n, device=images.device)[None], unk=unk.to(images.device)[None])
    logits = shuffled_logits(model, images, jigsaw) if jigsaw is not None else model(images)
    dal = dal_loss(model, jigsaw) if dal_weight and has_dal(model) else None
    if soft_labels is not None:
        loss = torch.sum(-soft_labels * F.log_softmax(logits, dim=-1), dim=-1).mean()
    else:
        loss = F.cross_entropy(logits, labels)
    return loss if dal is None else loss + dal_weight * dal


def parameter_gradients(model: nn.Module, loss: torch.Tensor, names: list[str] | None = None,
                        create_graph: bool = False) -> dict[str, torch.Tensor]:
    """name -> d loss / d param, for ``names`` (default: every parameter that gets a gradient)."""
    params = dict(model.named_parameters())
    names = list(params) if names is None else names
    grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph, allow_unused=True)
    return {n: g for n, g in zip(names, grads) if g is not None}


def draw_client_shuffle(grid: int, ratio: float, seed: int) -> Jigsaw:
    """One seeded MJP block-shuffle draw (the same for every model on a given image)."""
    return draw_jigsaw("mjp", grid, 1, ratio, py_rng=random.Random(seed), np_rng=np.random.RandomState(seed))


def client_update(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, mode: str,
                  threat: ThreatModel, patch_size: int, seed: int, dal_weight: float = 0.0,
                  jigsaw: Jigsaw | None = None) -> ClientUpdate:
    """Run the client step of ``mode`` and return the shared gradient (and the hidden ground truth).

    ``jigsaw`` replaces the seeded draw of the shuffled mode (one row, MJP mode: with ``unk``).
    """
    if mode not in CLIENT_MODES:
        raise ConfigError(f"unknown client mode {mode!r} (known: {', '.join(CLIENT_MODES)})")
    unk = shuffled = None
    fed = images
    if mode == "shuffled":
        grid = images.shape[-1] // patch_size
        jigsaw = jigsaw if jigsaw is not None else draw_client_shuffle(grid, threat.shuffle_ratio, seed)
        fed = shuffle_pixels(images, jigsaw, patch_size)
        shuffled = jigsaw.unk[0]
        unk = shuffled if takes_mask(model) else None
    weight = dal_weight if (mode == "shuffled" and threat.dal_loss and has_dal(model)) else 0.0
    loss = client_loss(model, fed, labels, unk, weight)
    grads = {n: g.detach() for n, g in parameter_gradients(model, loss).items()}
    return ClientUpdate(fed=fed.detach(), labels=labels, gradients=grads, mode=mode, unk=unk, shuffled=shuffled,
                        dal_weight=weight)


def recover_labels(bias_grad: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Bias-based label recovery from the classifier-bias gradient of a mean cross-entropy.

    d L / d b = mean_i (softmax_i - onehot_i): at batch 1 the only negative entry is the label. For
    larger batches (breaching's "bias-corrected" idea): take the negative entries, most negative
    first; further slots repeat the most negative class after removing one estimated per-sample
    impact (the mean negative mass per sample) from it.
    """
    grad = bias_grad.detach().double().clone()
    order = torch.argsort(grad)
    labels = [int(i) for i in order if grad[i] < 0][:batch_size]
    impact = grad[grad < 0].sum() / batch_size
    for i in labels:
        grad[i] -= impact
    while len(labels) < batch_size:
        i = int(torch.argmin(grad))
        labels.append(i)
        grad[i] -= impact
    return torch.tensor(sorted(labels), dtype=torch.long)


def attacker_labels(update: ClientUpdate, threat: ThreatModel, model: nn.Module) -> torch.Tensor:
    if threat.labels == "known":
        return update.labels
    name, _ = named_param(model, threat.head_bias, "fc.bias", "classifier.bias")
    return recover_labels(update.gradients[name], len(update.labels)).to(update.labels.device)


def detect_unknown_rows(update: ClientUpdate, model: nn.Module, rel_tol: float = 1e-12) -> torch.Tensor | None:
    """Patch positions whose PE-table gradient row is zero (served by MJP's shared unknown row).

    None when the model has no learnable PE table or no row is zero. A row counts as zero when its
    norm is below ``rel_tol`` times the largest row norm.
    """
    try:
        name, _ = named_param(model, "pe.table", "pos_embed")
    except ConfigError:
        return None
    if name not in update.gradients:
        return None
    norms = update.gradients[name].reshape(-1, update.gradients[name].shape[-1])[1:].double().norm(dim=1)
    zero = norms <= rel_tol * norms.max()
    return zero if bool(zero.any()) else None


def box_bounds(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device | str = "cpu"
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel [(0 - mean) / std, (1 - mean) / std] of normalised images, shaped [1, C, 1, 1]."""
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    return (0 - m) / s, (1 - m) / s


def denormalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Normalised images -> [0, 1], clamped (every metric is computed on these)."""
    m = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    return (images * s + m).clamp(0, 1)
