"""Supervised ViT training (the DeiT-S recipe of the official MJP code: train.sh, config.py)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import torch
from torch import nn

from vitpe.config import SupervisedRun
from vitpe.errors import ConfigError, DataError
from vitpe.mjp.dal import dal_weight
from vitpe.mjp.jigsaw import Jigsaw, draw_jigsaw
from vitpe.mae.finetune import add_probe_head, build_lars, prepare_from_pretrained
from vitpe.models.irpe import RPEConfig
from vitpe.models.vit import VisionTransformer, build_vit
from vitpe.train.checkpoint import seed_everything
from vitpe.train.data import TrainData, build_criterion, build_mixup, build_train_data
from vitpe.train.distributed import DistEnv, cleanup_distributed, init_distributed
from vitpe.train.engine import LoopSettings, TrainingSetup
from vitpe.train.memory import (ACT_BYTES, BatchPlan, Workload, check_device_memory, classifier_other_bytes,
                                log_plan, parameter_counts, plan_recipe, vit_tower)
from vitpe.train.optim import build_optimizer, build_scheduler, scaled_lrs

# Recipe keys that change how a run executes but not what it computes: they may differ on resume.
# The memory plan's inputs are among them; the accumulation it resolves is fingerprinted instead.
RUNTIME_KEYS = ("num_workers", "checkpoint_every", "eval_batch_size", "gpu_memory_gb", "grad_checkpointing")


def epoch_steps(data: TrainData, recipe: dict, root: Path) -> int:
    """Optimizer steps per epoch: one pass over the sampler, or ``recipe["steps_per_epoch"]`` if that is
    smaller (the smoke scale cuts epochs to a few steps; schedules follow the cut epoch)."""
    steps = data.batches_per_epoch // recipe["accum_steps"]
    if steps == 0:
        raise DataError(f"{root}: {data.sampler.samples_per_epoch} training samples per process do not fill "
                        f"one step of {data.batch_size} x {recipe['accum_steps']} images")
    cap = recipe.get("steps_per_epoch")
    return steps if cap is None else min(steps, cap)


def build_model(run: SupervisedRun, drop_path: float = 0.0) -> VisionTransformer:
    """The run's ViT: its PE (with MJP's options), the DAL head when DAL is on, iRPE and global
    pooling for fine-tuned encoders, the BatchNorm'd head of linear probing."""
    model = build_vit(run.model, run.num_classes, run.pos_embed, drop_path, pe_options=run.pe_options,
                      dal_head=run.dal["head"] if run.dal else None, first_block=run.first_block,
                      rpe=RPEConfig(**run.rpe) if run.rpe else None, global_pool=run.global_pool)
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
    size = run.model["img_size"]
    tower = vit_tower(run.model, 1 + (size // run.model["patch_size"]) ** 2, run.rpe)
    amp = run.recipe["amp"]
    other = classifier_other_bytes(tower, size, run.num_classes, ACT_BYTES[amp], run.global_pool, frozen)
    return Workload((tower,), 1, other, params, trainable, run.recipe.get("optimizer", "adamw"), amp, frozen)


def batch_plan(run: SupervisedRun, world_size: int) -> BatchPlan:
    """Micro-batch, accumulation and activation checkpointing of ``run`` on ``world_size`` processes."""
    return plan_recipe(run.recipe, world_size, lambda: memory_workload(run), multiple_of=micro_batch_multiple(run),
                       where=f"{run.protocol} {run.name}")


def architecture_metadata(run: SupervisedRun) -> dict:
    """What the weights metadata must record beyond tensor shapes (checked again when loading)."""
    return {"protocol": run.protocol, "rpe": run.rpe, "global_pool": run.global_pool}


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
    def from_run(cls, run: SupervisedRun) -> "JigsawSchedule | None":
        if run.jigsaw is None:
            return None
        cfg = run.jigsaw
        return cls(mode=cfg["mode"], grid=run.model["img_size"] // run.model["patch_size"],
                   patch_size=run.model["patch_size"], ratio=cfg["ratio"], apply_prob=cfg["apply_prob"],
                   start_epoch=cfg["start_epoch"], per_sample=cfg["per_sample"])

    def draw(self, epoch: int, batch: int) -> Jigsaw | None:
        if epoch < self.start_epoch or not torch.rand(1).item() > 1 - self.apply_prob:
            return None
        return draw_jigsaw(self.mode, self.grid, batch if self.per_sample else 1, self.ratio, self.patch_size)


def build_supervised(run: SupervisedRun, env: DistEnv) -> TrainingSetup:
    plan = batch_plan(run, env.world_size)
    check_device_memory(plan, env.device, f"{run.protocol} {run.name}")
    log_plan(plan, env.is_main)
    recipe = {**run.recipe, "accum_steps": plan.accum_steps}  # 'auto' or a minimum, resolved
    batch = plan.micro_batch
    # official: torch/numpy seeded with seed + rank; python's random is seeded here as well
    seed_everything(run.seed + env.rank)
    data = build_train_data(run.train_dir, recipe, run.model["img_size"], run.num_classes, batch,
                            seed=run.seed, rank=env.rank, world_size=env.world_size,
                            pin_memory=env.device.type == "cuda")
    steps_per_epoch = epoch_steps(data, recipe, run.train_dir)
    mixup = build_mixup(recipe, run.num_classes)
    if mixup is not None and batch % 2:
        raise ConfigError(f"Mixup/CutMix needs an even per-process batch, got {batch}")
    criterion = build_criterion(recipe, mixup)

    model = build_model(run, recipe["drop_path"])
    if run.pretrained is not None:
        prepare_from_pretrained(model, run)
    model.set_grad_checkpointing(plan.grad_checkpointing)
    model = model.to(env.device)
    lr, warmup_lr, min_lr = scaled_lrs(recipe)
    if recipe.get("optimizer", "adamw") == "lars":
        optimizer = build_lars(model, lr, recipe["weight_decay"])
    else:
        optimizer = build_optimizer(model, lr, recipe["weight_decay"], layer_decay=recipe.get("layer_decay"))
    scheduler = build_scheduler(optimizer, recipe["epochs"] * steps_per_epoch,
                                recipe["warmup_epochs"] * steps_per_epoch, warmup_lr, min_lr,
                                warmup_prefix=recipe.get("warmup_prefix", False))

    shuffle = JigsawSchedule.from_run(run)

    def loss_fn(net: nn.Module, batch: list[torch.Tensor], epoch: int) -> torch.Tensor:
        images, targets = batch
        if mixup is not None:  # on the device, after the CPU augmentations (official order)
            images, targets = mixup(images, targets)
        jigsaw = shuffle.draw(epoch, len(images)) if shuffle is not None else None  # after mixup (official)
        if jigsaw is not None:
            jigsaw = jigsaw.to(images.device)
        if run.dal is None:
            return criterion(net(images, jigsaw), targets)
        logits, dal_loss = net(images, jigsaw, with_dal=True)
        weight = dal_weight(epoch, recipe["epochs"], recipe["warmup_epochs"], run.dal["weight"],
                            run.dal["final_ratio"])
        return criterion(logits, targets) + weight * dal_loss

    fingerprint = {
        "model": dict(run.model),
        "recipe": {k: v for k, v in recipe.items() if k not in RUNTIME_KEYS},
        "pos_embed": run.pos_embed,
        "method": {"jigsaw": run.jigsaw, "dal": run.dal, "unk": run.unk},
        "encoder": {"protocol": run.protocol, "pretrained": run.pretrained, "rpe": run.rpe,
                    "global_pool": run.global_pool},
        "num_classes": run.num_classes,
        "seed": run.seed,
        "world_size": env.world_size,
        "train_images": len(data.dataset),
    }
    settings = LoopSettings(
        epochs=recipe["epochs"],
        steps_per_epoch=steps_per_epoch,
        accum_steps=recipe["accum_steps"],
        clip_grad=recipe["clip_grad"],
        amp=recipe["amp"],
        checkpoint_every=recipe["checkpoint_every"],
        fingerprint=fingerprint,
        weights_metadata={"experiment": run.name, "scale": run.scale, "model": dict(run.model),
                          "pos_embed": run.pos_embed, "num_classes": run.num_classes,
                          "dal_head": run.dal["head"] if run.dal else None, **architecture_metadata(run)},
        find_unused_parameters=run.unk is not None,
    )
    return TrainingSetup(model, optimizer, scheduler, data, loss_fn, settings)


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
