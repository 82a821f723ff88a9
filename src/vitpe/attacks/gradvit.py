"""GradViT-style attack (Hatamizadeh et al., CVPR 2022; docs/FIDELITY.md row 47), written from the paper.

No official code exists (MJP's ``gradvit/`` is unfinished scaffolding). The candidate, initialised
U[0, 1) in normalised space (MJP's script), minimises under a loss schedule

    α_grad(t)·L_grad + α_image(t)·L_image + α_patch·L_patch + α_extra·(TV² + ||x||₂)

- L_grad: gradient matching; ``match: cosine`` (default, breaching's global cosine, so the weights
  balance whatever the gradient scale) or ``mse`` (MJP's replication: Σ over parameters of the
  mean squared difference);
- L_image: DeepInversion/GradInversion BN-statistics prior: MSE between the batch mean/variance at
  every BatchNorm input (downsample BNs excluded, as MJP) of a separate pretrained CNN and its running
  statistics. The CNN is read from a configured checkpoint (``image_prior``); without one the attack
  runs as "GradViT w/o image prior" and says so in the metrics;
- L_patch: GradViT's patch prior, squared differences across the borders of adjacent P×P patches, in
  pixel (normalised) space; MJP's script applies it to a freshly random-initialised PatchEmbed output
  instead (a defect);
- TV² and the L2 norm: MJP's "extra" term.

Schedule (the values of MJP's ``gradvit/`` scripts): α_grad 4e-3 → 2e-3 and α_image 0 → 0.2 at half
the run; α_patch = α_extra = 1e-4; Adam lr 0.1 with cosine annealing to 0; the last iterate is
returned (the script keeps no best iterate). The registration term is left out (MJP's script sets it
to 0).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vitpe.attacks.matching import InversionTask, clamp_to_box, gradient_distance, initial_candidates, matching_step
from vitpe.attacks.registry import Reconstruction
from vitpe.errors import CheckpointError

NO_PRIOR = "GradViT w/o image prior"


@dataclass(frozen=True)
class GradViTSettings:
    iterations: int = 120000
    lr: float = 0.1
    match: str = "cosine"  # cosine | mse
    alpha_grad: tuple[float, float] = (4e-3, 2e-3)  # before / after the switch
    alpha_image: tuple[float, float] = (0.0, 0.2)
    switch: float = 0.5  # fraction of the run at which both alphas switch
    alpha_patch: float = 1e-4
    alpha_extra: float = 1e-4
    init: str = "rand"
    boxed: bool = True
    image_prior: str | None = None  # CNN checkpoint (torchvision keys; .safetensors or a state-dict .pth)
    image_prior_arch: str = "resnet50"  # a torchvision classification architecture


class BNStatisticsPrior(nn.Module):
    """Σ over BatchNorm layers of MSE(batch mean, running mean) + MSE(batch var, running var)."""

    def __init__(self, cnn: nn.Module) -> None:
        super().__init__()
        self.cnn = cnn.eval()
        for p in self.cnn.parameters():
            p.requires_grad_(False)
        self._losses: list[torch.Tensor] = []
        for name, module in self.cnn.named_modules():
            if isinstance(module, nn.BatchNorm2d) and "downsample" not in name:
                module.register_forward_hook(self._hook)

    def _hook(self, module: nn.BatchNorm2d, inputs: tuple[torch.Tensor], _output: torch.Tensor) -> None:
        x = inputs[0]
        mean = x.mean(dim=(0, 2, 3))
        var = x.permute(1, 0, 2, 3).reshape(x.shape[1], -1).var(dim=1, unbiased=False)
        self._losses.append(torch.mean((mean - module.running_mean) ** 2) + torch.mean((var - module.running_var) ** 2))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self._losses = []
        self.cnn(images)
        return torch.stack(self._losses).sum()


def load_image_prior(path: str | None, arch: str = "resnet50") -> tuple[BNStatisticsPrior | None, str, str]:
    """(prior or None, status "used" | "none" | "skipped", reason). Never downloads anything."""
    if path is None:
        return None, "none", "no CNN checkpoint configured (attacks.gradvit.image_prior: null)"
    file = Path(path)
    if not file.is_file():
        return None, "skipped", f"image-prior checkpoint {file} not found"
    import torchvision

    try:
        cnn = getattr(torchvision.models, arch)(weights=None)
    except AttributeError:
        raise CheckpointError(f"attacks.gradvit.image_prior_arch: torchvision has no model {arch!r}") from None
    from vitpe.models.weights import load_weights_only, read_weights

    if file.suffix == ".safetensors":
        state = read_weights(file)
    else:
        state = load_weights_only(file, f"{arch} state dict (attacks.gradvit.image_prior)")
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    try:
        cnn.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{file}: not a {arch} state dict ({str(exc).splitlines()[0]})") from None
    return BNStatisticsPrior(cnn), "used", ""


def patch_prior(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Σ over patch-border lines of the mean squared jump across it (vertical and horizontal)."""
    cols = (x[..., :, patch - 1:-1:patch] - x[..., :, patch::patch]).pow(2).mean(dim=(0, 1, 2)).sum()
    rows = (x[..., patch - 1:-1:patch, :] - x[..., patch::patch, :]).pow(2).mean(dim=(0, 1, 3)).sum()
    return cols + rows


def extra_prior(x: torch.Tensor) -> torch.Tensor:
    """MJP's extra term: 2·(mean squared vertical + horizontal differences)/B + the L2 norm."""
    tv2 = (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean() + (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean()
    return 2 * tv2 / x.shape[0] + x.norm()


def gradvit(model: nn.Module, gradients: dict[str, torch.Tensor], labels: torch.Tensor, shape: Sequence[int],
            box: tuple[torch.Tensor, torch.Tensor], settings: GradViTSettings, seed: int, patch_size: int,
            prior: BNStatisticsPrior | None = None, unk: torch.Tensor | None = None,
            dal_weight: float = 0.0) -> Reconstruction:
    task = InversionTask(gradients, labels, tuple(shape), seed, unk, dal_weight)
    return gradvit_batch(model, [task], box, settings, patch_size, prior)[0]


def gradvit_batch(model: nn.Module, tasks: Sequence[InversionTask], box: tuple[torch.Tensor, torch.Tensor],
                 settings: GradViTSettings, patch_size: int,
                 prior: BNStatisticsPrior | None = None) -> list[Reconstruction]:
    """GradViT on independent ``tasks`` in one objective (matching.py); per task, the result of running it
    alone (every prior is computed on the task's own candidate)."""
    device = tasks[0].labels.device
    step = matching_step(model, tasks)
    x = initial_candidates(tasks, settings.init, 0, device).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=settings.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=settings.iterations, eta_min=0.0)
    switch = int(settings.switch * settings.iterations)
    start = time.perf_counter()
    match_values = torch.full((len(tasks),), float("nan"))
    for it in range(settings.iterations):
        late = it > switch

        def objective(candidate, grads, target):
            match = gradient_distance(grads, target, settings.match)
            value = settings.alpha_grad[late] * match + settings.alpha_patch * patch_prior(candidate, patch_size) \
                + settings.alpha_extra * extra_prior(candidate)
            if prior is not None and settings.alpha_image[late]:
                value = value + settings.alpha_image[late] * prior(candidate)
            return value, match

        _, match_values, x_grad = step(x, objective)
        opt.zero_grad(set_to_none=True)
        x.grad = x_grad
        opt.step()
        sched.step()
        if settings.boxed:
            clamp_to_box(x, box)
    seconds = time.perf_counter() - start
    final = x.detach().clone()
    return [Reconstruction(final[i], float(match_values[i]),  # the script keeps the last iterate
                               {"seconds": seconds, "iterations": settings.iterations, "batched": len(tasks)})
            for i in range(len(tasks))]
