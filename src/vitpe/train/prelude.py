"""What every trainer (supervised, fine-tuning, linear probing, pretraining) does around building its
model: plan the batch and seed this rank before anything is drawn, size the epoch, and describe the
run to the engine (its steps, its resume fingerprint and the weights metadata)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from vitpe.errors import DataError
from vitpe.runs import PretrainRun, SupervisedRun, dependency_record
from vitpe.train.checkpoint import CPU_THREADS, seed_everything
from vitpe.train.data import TrainData
from vitpe.train.distributed import DistEnv, cleanup_distributed, init_distributed
from vitpe.train.engine import LoopSettings, TrainingSetup
from vitpe.train.memory import BatchPlan, check_device_memory, log_plan

Run = TypeVar("Run", SupervisedRun, PretrainRun)


def start_rank(run: Run, env: DistEnv, batch_plan: Callable[[Run, int], BatchPlan], where: str) -> BatchPlan:
    """The run's batch plan for this world size, checked against this card and said once; then the
    global RNGs seeded with seed + rank (official code; python's random is seeded as well), so every
    draw after this (data order, augmentations, model init) repeats exactly."""
    plan = batch_plan(run, env.world_size)
    check_device_memory(plan, env.device, where)
    log_plan(plan, env.is_main)
    seed_everything(run.seed + env.rank)
    return plan


def epoch_steps(data: TrainData, run: Run, accum_steps: int) -> int:
    """Optimizer steps per epoch: one pass over the sampler, or the recipe's ``steps_per_epoch`` if that
    is smaller (the smoke scale cuts epochs to a few steps; schedules follow the cut epoch)."""
    steps = data.batches_per_epoch // accum_steps
    if steps == 0:
        raise DataError(f"{run.train_dir}: {data.sampler.samples_per_epoch} training samples per process do not "
                        f"fill one step of {data.batch_size} x {accum_steps} images")
    cap = run.recipe.steps_per_epoch
    return steps if cap is None else min(steps, cap)


def cpu_threads(env: DistEnv) -> int | None:
    """torch's intra-op CPU threads when the model trains on the CPU (``--threads``, else OMP_NUM_THREADS,
    which Snakemake sets to the job's threads): the order of CPU reductions, hence the bits of every
    step, depends on it. None on a GPU, where the CPU only loads data."""
    return torch.get_num_threads() if env.device.type == "cpu" else None


def run_fingerprint(record: dict, world_size: int, train_images: int, threads: int | None = None) -> dict:
    """What a resumed state must have been written for: the run's dependency record (with the resolved
    accumulation) plus what is only known at run time (the processes, the training set, and on CPU
    the thread count: ``CPU_THREADS``)."""
    fingerprint = {"run": record, "world_size": world_size, "train_images": train_images}
    return fingerprint if threads is None else {**fingerprint, CPU_THREADS: threads}


def loop_settings(run: Run, plan: BatchPlan, steps_per_epoch: int, train_images: int,
                  find_unused_parameters: bool, threads: int | None = None) -> LoopSettings:
    """The engine's settings of ``run`` under ``plan``; the dependency record (with the plan's
    accumulation) is both the weights metadata and the core of the resume fingerprint (``threads``:
    ``cpu_threads(env)``)."""
    recipe = run.recipe
    record = dependency_record(run, plan.accum_steps)
    return LoopSettings(
        epochs=recipe.epochs, steps_per_epoch=steps_per_epoch, accum_steps=plan.accum_steps,
        clip_grad=recipe.clip_grad, amp=recipe.amp, checkpoint_every=run.runtime.checkpoint_every,
        fingerprint=run_fingerprint(record, plan.world_size, train_images, threads), weights_metadata=record,
        find_unused_parameters=find_unused_parameters, validate_every=run.runtime.validate_every,
        compile=run.runtime.compile,
    )


def train_run(build: Callable[[Run, DistEnv], TrainingSetup], run: Run, out_dir: Path, device: str | None,
              max_steps: int | None) -> Path:
    """Set up this process (torchrun's rank, or alone), ``build`` the run's training and run or resume it
    into ``out_dir``; what ``TrainingSetup.run`` returns."""
    env = init_distributed(device)
    try:
        return build(run, env).run(env, Path(out_dir), max_steps)
    finally:
        cleanup_distributed(env)
