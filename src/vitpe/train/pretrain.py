"""MAE / MAE+ / AdPE pretraining on the shared engine (MAE main_pretrain.py, AdPE training/main_worker.py).

Data: K independent RandomResizedCrop (bicubic) + flip + ImageNet normalisation views per image
(MAE: one 224 view, crop scale 0.2–1; MAE+/AdPE: 4 × 112, scale 0.08–1), stacked so each optimizer
step sees B·K crops, each with its own mask. AdamW (0.9, 0.95), wd 0.05 without decay on 1-D
parameters, lr = blr · batch / 256 with a linear warm-up and a half-cycle cosine (MAE's lr_sched),
AdPE's δ in its own group ascending at adv_lr on the same schedule and projected after every step.
Outputs: ``model.safetensors`` (encoder + decoder + δ), ``encoder.safetensors`` (timm keys, for
fine-tuning and transfer) and ``log.jsonl`` (loss, lr, ‖δ‖ per step).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.optim import param_groups_weight_decay
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from torchvision import transforms as T

from vitpe.data.transforms import eval_transform
from vitpe.mae.adpe import adversarial_group, adversarial_parameters, attach_ascent, delta_norms
from vitpe.mae.masking import num_visible
from vitpe.mae.model import MaskedAutoencoder
from vitpe.models.vit import unwrap
from vitpe.runs import PretrainRun
from vitpe.models.weights import save_tensors
from vitpe.train.data import ResumableSampler, TrainData, image_folder, split_normalize
from vitpe.train.distributed import DistEnv
from vitpe.train.engine import TrainingSetup
from vitpe.train.memory import (ACT_BYTES, BatchPlan, Workload, autoencoder_other_bytes, parameter_counts,
                                plan_recipe, vit_tower)
from vitpe.train.optim import build_optimizer, build_scheduler, scaled_lrs
from vitpe.train.prelude import cpu_threads, epoch_steps, loop_settings, start_rank, train_run

ENCODER_NAME = "encoder.safetensors"
MASK_SEED = 20230314  # fixed: every model (and every epoch) is scored on the same held-out masks


class MultiCrop:
    """``num_crops`` independent draws of one view pipeline, stacked: [K, 3, size, size]."""

    def __init__(self, view: Callable, num_crops: int) -> None:
        self.view, self.num_crops = view, num_crops

    def __call__(self, image: object) -> torch.Tensor:
        return torch.stack([self.view(image) for _ in range(self.num_crops)])


def view_transform(crop_size: int, crop_scale: tuple[float, float], hflip: float) -> T.Compose:
    """MAE's pretraining view (main_pretrain.py): RandomResizedCrop (bicubic) + flip + normalise."""
    return T.Compose([
        T.RandomResizedCrop(crop_size, scale=tuple(crop_scale), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(hflip),
        T.ToTensor(),
        T.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
    ])


def build_autoencoder(run: PretrainRun) -> MaskedAutoencoder:
    absolute = run.adversary.mode if run.adversary and run.adversary.target == "absolute" else None
    return MaskedAutoencoder(run.model, run.decoder, method=run.method, mask_ratio=run.recipe.mask_ratio,
                             norm_pix_loss=run.recipe.norm_pix_loss, rpe=run.rpe_config, adversary=absolute)


def build_pretrain_optimizer(model: nn.Module, run: PretrainRun, lr: float) -> torch.optim.Optimizer:
    """AdamW groups (decay / no decay on 1-D parameters) plus AdPE's ascending δ group."""
    recipe = run.recipe
    deltas = {id(p) for _, p in adversarial_parameters(model)}
    groups = []
    for group in param_groups_weight_decay(model, recipe.weight_decay):
        params = [p for p in group["params"] if id(p) not in deltas]
        if params:
            groups.append({**group, "params": params})
    if deltas:
        adv_lr = recipe.adv_lr * recipe.batch_size / recipe.lr_batch_divisor
        groups.append(adversarial_group((p for _, p in adversarial_parameters(model)), adv_lr / lr))
    optimizer = build_optimizer(groups, lr, recipe.weight_decay, betas=tuple(recipe.betas),
                                fused=run.runtime.fused_optimizer)
    if deltas:
        attach_ascent(optimizer, run.adversary.norm, run.adversary.eps)
    return optimizer


def memory_workload(run: PretrainRun) -> Workload:
    """What one image (its ``num_crops`` views) costs on a GPU (vitpe.train.memory): MAE's encoder sees
    the visible tokens only, MAE+'s all of them; the decoder always sees every position."""
    params, trainable = parameter_counts(lambda: build_autoencoder(run))
    crop = run.crops.crop_size
    patches = run.model.num_patches
    seen = patches if run.method == "mae_plus" else num_visible(patches, run.recipe.mask_ratio)
    encoder = vit_tower(run.model, 1 + seen, run.rpe_config)
    decoder = vit_tower(run.decoder, 1 + patches, run.rpe_config)
    amp = run.recipe.amp
    other = autoencoder_other_bytes(encoder, decoder, crop, patches, ACT_BYTES[amp])
    return Workload((encoder, decoder), run.crops.num_crops, other, params, trainable, "adamw", amp)


def batch_plan(run: PretrainRun, world_size: int) -> BatchPlan:
    """Micro-batch (images), accumulation and activation checkpointing of ``run``."""
    return plan_recipe(run.recipe, run.runtime, world_size, lambda: memory_workload(run),
                       where=f"pretrain {run.name}")


@torch.no_grad()
def held_out_loss(model: MaskedAutoencoder, val_dir: Path, img_size: int, device: torch.device,
                  batch_size: int = 200, cache_images: bool = False) -> tuple[float, int]:
    """(mean masked-patch loss, images) of ``model`` as trained (AdPE's δ included) on ``val_dir``, each
    image resized and centre-cropped to ``img_size``, one mask per image from MASK_SEED."""
    transform = eval_transform(img_size, crop_pct=1.0)  # the short side resized to the crop
    dataset = image_folder(val_dir, transform, cache="samples" if cache_images else None)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    generator = torch.Generator().manual_seed(MASK_SEED)
    total = count = 0.0
    for images, _ in loader:
        noise = torch.rand(len(images), model.num_patches, generator=generator).to(device)
        total += float(model(images.to(device), noise=noise)[0]) * len(images)
        count += len(images)
    return total / count, int(count)


def build_pretrain(run: PretrainRun, env: DistEnv) -> TrainingSetup:
    plan = start_rank(run, env, batch_plan, f"pretrain {run.name}")
    recipe = run.recipe
    view, collate = split_normalize(view_transform(run.crops.crop_size, run.crops.crop_scale, recipe.hflip))
    dataset = image_folder(run.train_dir, MultiCrop(view, run.crops.num_crops),
                           cache="decoded" if run.runtime.cache_images else None)
    sampler = ResumableSampler(DistributedSampler(dataset, num_replicas=env.world_size, rank=env.rank,
                                                  shuffle=True, seed=0), run.seed)
    data = TrainData(dataset, sampler, plan.micro_batch, run.runtime.num_workers, run.seed,
                     env.device.type == "cuda", collate)
    steps_per_epoch = epoch_steps(data, run, plan.accum_steps)

    model = build_autoencoder(run).to(env.device)
    model.set_grad_checkpointing(plan.grad_checkpointing)
    lr, warmup_lr, min_lr = scaled_lrs(recipe)
    optimizer = build_pretrain_optimizer(model, run, lr)
    scheduler = build_scheduler(optimizer, recipe.epochs * steps_per_epoch,
                                recipe.warmup_epochs * steps_per_epoch, warmup_lr, min_lr, warmup_prefix=True)

    def loss_fn(net: nn.Module, batch: list[torch.Tensor], epoch: int) -> torch.Tensor:
        views = batch[0]  # [B, K, 3, h, w]: the K crops of an image are independent samples
        return net(views.flatten(0, 1))[0]

    # MAE's DDP sets find_unused_parameters (main_pretrain.py); the RPE embedding δ may get none
    settings = loop_settings(run, plan, steps_per_epoch, len(dataset), find_unused_parameters=True,
                             threads=cpu_threads(env))

    def publish(trained: nn.Module, out_dir: Path, extra_metadata: dict) -> None:
        save_tensors(unwrap(trained).encoder_state_dict(), out_dir / ENCODER_NAME,
                     {**settings.weights_metadata, **extra_metadata})

    def validate(trained: nn.Module) -> dict[str, float]:
        return {"loss": held_out_loss(trained, run.val_dir, run.model.img_size, env.device,
                                      cache_images=run.runtime.cache_images)[0]}

    return TrainingSetup(model, optimizer, scheduler, data, loss_fn, settings,
                         extra_log=lambda: delta_norms(model), publish=publish, validate=validate)


def train_pretrain(run: PretrainRun, out_dir: Path, device: str | None = None,
                   max_steps: int | None = None) -> Path:
    """Pretrain (or resume) ``run`` into ``out_dir`` (model/encoder safetensors, log.jsonl)."""
    return train_run(build_pretrain, run, out_dir, device, max_steps)
