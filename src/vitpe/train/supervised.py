"""Supervised ViT training (the DeiT-S recipe of the official MJP code: train.sh, config.py), also
fine-tuning and linear probing of pretrained encoders (vitpe.train.finetune). What a method adds to
the loss (MJP's shuffle and DAL) comes from its objective (vitpe.train.objectives)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vitpe.errors import ConfigError, DataError
from vitpe.models.vit import VisionTransformer, build_vit
from vitpe.runs import ClassifierRecipe, PretrainRecipe, SupervisedRun, dependency_record
from vitpe.train.checkpoint import seed_everything
from vitpe.train.data import TrainData, build_criterion, build_mixup, build_train_data
from vitpe.train.distributed import DistEnv, cleanup_distributed, init_distributed
from vitpe.train.engine import LoopSettings, TrainingSetup
from vitpe.train.finetune import add_probe_head, prepare_from_pretrained
from vitpe.train.memory import (ACT_BYTES, BatchPlan, Workload, check_device_memory, classifier_other_bytes,
                                log_plan, parameter_counts, plan_recipe, vit_tower)
from vitpe.train.objectives import objective_for
from vitpe.train.optim import build_lars, build_optimizer, build_scheduler, scaled_lrs


def epoch_steps(data: TrainData, recipe: ClassifierRecipe | PretrainRecipe, accum_steps: int, root: Path) -> int:
    """Optimizer steps per epoch: one pass over the sampler, or ``recipe.steps_per_epoch`` if that is
    smaller (the smoke scale cuts epochs to a few steps; schedules follow the cut epoch)."""
    steps = data.batches_per_epoch // accum_steps
    if steps == 0:
        raise DataError(f"{root}: {data.sampler.samples_per_epoch} training samples per process do not fill "
                        f"one step of {data.batch_size} x {accum_steps} images")
    cap = recipe.steps_per_epoch
    return steps if cap is None else min(steps, cap)


def run_fingerprint(record: dict, world_size: int, train_images: int) -> dict:
    """What a resumed state must have been written for: the run's dependency record (with the resolved
    accumulation) plus what is only known at run time (the processes, the training set)."""
    return {"run": record, "world_size": world_size, "train_images": train_images}


def build_model(run: SupervisedRun, drop_path: float = 0.0) -> VisionTransformer:
    """The run's ViT: its PE (with its options), what its method adds (MJP: the DAL head), iRPE and
    global pooling for fine-tuned encoders, the BatchNorm'd head of linear probing."""
    model = build_vit(run.model, run.num_classes, run.pos_embed, drop_path, pe_options=run.pe_options,
                      first_block=run.first_block, rpe=run.rpe, global_pool=run.global_pool)
    objective_for(run).prepare(model)
    if run.protocol == "linprobe":
        add_probe_head(model)
    return model


def micro_batch_multiple(run: SupervisedRun) -> int:
    """Mixup/CutMix (timm's batch mode) pair the samples of a micro-batch: it must be even."""
    return 2 if build_mixup(run.recipe, run.num_classes) is not None else 1


def memory_workload(run: SupervisedRun) -> Workload:
    """What one image of ``run`` costs on a GPU (vitpe.train.memory); linear probing trains the head only."""
    frozen = run.protocol == "linprobe"
    params, trainable = parameter_counts(lambda: build_model(run), (lambda m: m.head) if frozen else (lambda m: m))
    size = run.model.img_size
    tower = vit_tower(run.model, 1 + run.model.num_patches, run.rpe)
    amp = run.recipe.amp
    other = classifier_other_bytes(tower, size, run.num_classes, ACT_BYTES[amp], run.global_pool, frozen)
    return Workload((tower,), 1, other, params, trainable, run.recipe.optimizer, amp, frozen)


def batch_plan(run: SupervisedRun, world_size: int) -> BatchPlan:
    """Micro-batch, accumulation and activation checkpointing of ``run`` on ``world_size`` processes."""
    return plan_recipe(run.recipe, run.runtime, world_size, lambda: memory_workload(run),
                       multiple_of=micro_batch_multiple(run), where=f"{run.protocol} {run.name}")


def build_supervised(run: SupervisedRun, env: DistEnv) -> TrainingSetup:
    plan = batch_plan(run, env.world_size)
    check_device_memory(plan, env.device, f"{run.protocol} {run.name}")
    log_plan(plan, env.is_main)
    recipe, accum_steps = run.recipe, plan.accum_steps  # the recipe's 'auto' or minimum, resolved
    batch = plan.micro_batch
    # official: torch/numpy seeded with seed + rank; python's random is seeded here as well
    seed_everything(run.seed + env.rank)
    data = build_train_data(run.train_dir, recipe, run.model.img_size, run.num_classes, batch,
                            seed=run.seed, rank=env.rank, world_size=env.world_size,
                            num_workers=run.runtime.num_workers, pin_memory=env.device.type == "cuda")
    steps_per_epoch = epoch_steps(data, recipe, accum_steps, run.train_dir)
    mixup = build_mixup(recipe, run.num_classes)
    if mixup is not None and batch % 2:
        raise ConfigError(f"Mixup/CutMix needs an even per-process batch, got {batch}")
    criterion = build_criterion(recipe, mixup)

    model = build_model(run, recipe.drop_path)
    if run.pretrained is not None:
        prepare_from_pretrained(model, run)
    model.set_grad_checkpointing(plan.grad_checkpointing)
    model = model.to(env.device)
    lr, warmup_lr, min_lr = scaled_lrs(recipe)
    if recipe.optimizer == "lars":
        optimizer = build_lars(model, lr, recipe.weight_decay)
    else:
        optimizer = build_optimizer(model, lr, recipe.weight_decay, layer_decay=recipe.layer_decay)
    scheduler = build_scheduler(optimizer, recipe.epochs * steps_per_epoch,
                                recipe.warmup_epochs * steps_per_epoch, warmup_lr, min_lr,
                                warmup_prefix=recipe.warmup_prefix)

    objective = objective_for(run)

    def loss_fn(net: nn.Module, batch: list[torch.Tensor], epoch: int) -> torch.Tensor:
        images, targets = batch
        if mixup is not None:  # on the device, after the CPU augmentations (official order)
            images, targets = mixup(images, targets)
        return objective.loss(net, images, targets, epoch, criterion)

    record = dependency_record(run, accum_steps)
    settings = LoopSettings(
        epochs=recipe.epochs,
        steps_per_epoch=steps_per_epoch,
        accum_steps=accum_steps,
        clip_grad=recipe.clip_grad,
        amp=recipe.amp,
        checkpoint_every=run.runtime.checkpoint_every,
        fingerprint=run_fingerprint(record, env.world_size, len(data.dataset)),
        weights_metadata=record,
        find_unused_parameters=objective.find_unused_parameters,
    )
    return TrainingSetup(model, optimizer, scheduler, data, loss_fn, settings,
                         train_module=objective.training_module(model))


def train_supervised(run: SupervisedRun, out_dir: Path, device: str | None = None,
                     max_steps: int | None = None) -> Path:
    """Train (or resume) ``run`` into ``out_dir``: model.safetensors and log.jsonl (state/ while running).

    Returns the weights path when training is complete, the state path when stopped at
    ``max_steps`` (a global step count; rerun without it to continue).
    """
    env = init_distributed(device)
    try:
        return build_supervised(run, env).run(env, Path(out_dir), max_steps)
    finally:
        cleanup_distributed(env)
