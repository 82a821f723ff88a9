"""Supervised ViT training (the DeiT-S recipe of the official MJP code: train.sh, config.py), also
fine-tuning and linear probing of pretrained encoders (vitpe.train.finetune). What a method adds to
the loss (MJP's shuffle and DAL) comes from its objective (vitpe.train.objectives)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vitpe.errors import ConfigError
from vitpe.models.vit import VisionTransformer, build_vit
from vitpe.runs import SupervisedRun
from vitpe.train.data import build_criterion, build_mixup, build_train_data
from vitpe.train.distributed import DistEnv
from vitpe.train.engine import TrainingSetup
from vitpe.train.finetune import add_probe_head, prepare_from_pretrained
from vitpe.train.memory import (ACT_BYTES, BatchPlan, Workload, classifier_other_bytes, parameter_counts,
                                plan_recipe, vit_tower)
from vitpe.train.objectives import objective_for
from vitpe.train.optim import build_lars, build_optimizer, build_scheduler, scaled_lrs
from vitpe.train.prelude import cpu_threads, epoch_steps, loop_settings, start_rank, train_run


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
    plan = start_rank(run, env, batch_plan, f"{run.protocol} {run.name}")
    recipe, batch = run.recipe, plan.micro_batch
    data = build_train_data(run.train_dir, recipe, run.model.img_size, run.num_classes, batch,
                            seed=run.seed, rank=env.rank, world_size=env.world_size,
                            num_workers=run.runtime.num_workers, pin_memory=env.device.type == "cuda",
                            cache_images=run.runtime.cache_images)
    steps_per_epoch = epoch_steps(data, run, plan.accum_steps)
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
        optimizer = build_optimizer(model, lr, recipe.weight_decay, layer_decay=recipe.layer_decay,
                                    fused=run.runtime.fused_optimizer)
    scheduler = build_scheduler(optimizer, recipe.epochs * steps_per_epoch,
                                recipe.warmup_epochs * steps_per_epoch, warmup_lr, min_lr,
                                warmup_prefix=recipe.warmup_prefix)

    objective = objective_for(run)

    def loss_fn(net: nn.Module, batch: list[torch.Tensor], epoch: int) -> torch.Tensor:
        images, targets = batch
        if mixup is not None:  # on the device, after the CPU augmentations (official order)
            images, targets = mixup(images, targets)
        return objective.loss(net, images, targets, epoch, criterion)

    settings = loop_settings(run, plan, steps_per_epoch, len(data.dataset), objective.find_unused_parameters,
                             threads=cpu_threads(env))

    def validate(trained: nn.Module) -> dict[str, float]:
        from vitpe.evaluate.classification import classification_metrics  # evaluate imports train

        metrics = classification_metrics(trained, env.device, run)
        return {"top1": metrics["top1"], "top5": metrics["top5"]}

    return TrainingSetup(model, optimizer, scheduler, data, loss_fn, settings,
                         train_module=objective.training_module(model), validate=validate)


def train_supervised(run: SupervisedRun, out_dir: Path, device: str | None = None,
                     max_steps: int | None = None) -> Path:
    """Train (or resume) ``run`` into ``out_dir``: model.safetensors and log.jsonl (state/ while running).

    Returns the weights path when training is complete, the state path when stopped at
    ``max_steps`` (a global step count; rerun without it to continue).
    """
    return train_run(build_supervised, run, out_dir, device, max_steps)
