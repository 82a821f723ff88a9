"""The one training loop, shared by supervised and self-supervised runs.

A method supplies the model, optimizer, scheduler, data and a ``loss_fn(model, batch) -> loss``;
the engine owns everything about running it: gradient accumulation, AMP, clipping, the per-step
log, periodic and pre-emption checkpoints, divergence detection, resumption and the final weights.

Exact resumption (bitwise on CPU with ``num_workers=0``) rests on three things: the checkpoint is taken
at an optimizer-step boundary together with every global RNG state; the data order of an epoch
depends only on (seed, epoch) and the loader skips the batches already consumed; nothing draws from
the global RNGs between a checkpoint and the next step except what a resumed run repeats.
"""
from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from timm.scheduler.scheduler import Scheduler
from torch import nn

from vitpe.errors import CheckpointError, InUse, Preempted, TrainingDiverged
from vitpe.io import atomic_path, make_dirs, publish_folder
from vitpe.models.weights import WEIGHTS_NAME, load_timm_state_dict, save_weights, to_timm_state_dict
from vitpe.train.checkpoint import (
    STATE_NAME,
    capture_rng,
    check_fingerprint,
    fingerprint_json,
    load_state,
    restore_rng,
    save_state,
)
from vitpe.train.data import TrainData, close_batches
from vitpe.train.distributed import (DistEnv, all_reduce_mean, any_rank, autocast, barrier, gather_objects,
                                     wrap_ddp)
from vitpe.train.lock import LOCK_NAME, exclusive_lock
from vitpe.train.progress import LIVE_DIR, StepLogger, truncate_log
from vitpe.train.signals import PreemptionGuard

LossFn = Callable[[nn.Module, list[torch.Tensor], int], torch.Tensor]  # (model, batch, epoch) -> loss
Validate = Callable[[nn.Module], dict[str, float]]  # the trained model (in eval mode) -> named scores
LOG_NAME = "log.jsonl"
STATE_DIR = "state"  # resumable work in progress; never a declared workflow output


@dataclass(frozen=True)
class LoopSettings:
    epochs: int
    steps_per_epoch: int  # optimizer steps
    accum_steps: int
    clip_grad: float  # max grad norm; 0 disables clipping
    amp: str  # none | bf16 | fp16 (CUDA only; ignored on CPU)
    checkpoint_every: int  # optimizer steps between state.pt writes
    fingerprint: dict[str, Any]  # the configuration a state.pt belongs to
    weights_metadata: dict[str, Any] = field(default_factory=dict)  # JSON-able, stored in the weights
    find_unused_parameters: bool = False  # DDP: some parameters idle on some steps (MJP's unknown row)
    validate_every: int = 0  # epochs between validations (0: none)
    compile: bool = False  # torch.compile the (DDP-wrapped) training module

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


class NonFiniteLoss(Exception):
    def __init__(self, what: str, value: float) -> None:
        super().__init__(f"{what} is {value}")


class StepRunner:
    """One optimizer step over ``accum_steps`` micro-batches (also used by the benchmark)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn, *,
                 accum_steps: int, clip_grad: float, amp: str, env: DistEnv) -> None:
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.accum_steps = accum_steps
        self.clip_grad = clip_grad
        self.env = env
        self.amp = amp
        # bf16 has fp32's range and needs no loss scaling; fp16 does.
        self.scaler = torch.amp.GradScaler("cuda", enabled=env.device.type == "cuda" and amp == "fp16")
        self.params = [p for p in model.parameters() if p.requires_grad]

    def __call__(self, micro_batches: list[list[torch.Tensor]], epoch: int = 0) -> tuple[float, float]:
        """Run forward/backward on each micro-batch and step; return (mean loss, grad norm).

        Raises NonFiniteLoss before touching the weights if the loss (or, without loss scaling, the
        gradient norm) is NaN/inf.
        """
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.env.device)
        for i, batch in enumerate(micro_batches):
            batch = [t.to(self.env.device, non_blocking=True) for t in batch]
            last = i == len(micro_batches) - 1
            # DDP all-reduces gradients on every backward unless told not to; only the last counts.
            sync = self.model.no_sync() if self.env.distributed and not last else contextlib.nullcontext()
            with sync:
                with autocast(self.env.device, self.amp):
                    loss = self.loss_fn(self.model, batch, epoch)
                self.scaler.scale(loss / self.accum_steps).backward()
            total += loss.detach().float()
        loss_value = float(all_reduce_mean(total / len(micro_batches), self.env))
        if not math.isfinite(loss_value):
            raise NonFiniteLoss("loss", loss_value)
        self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in self.params if p.grad is not None]
        if self.clip_grad > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad))
        else:
            grad_norm = float(torch.nn.utils.get_total_norm(grads))
        # With fp16 loss scaling an inf norm is routine: the scaler skips that step and lowers the scale.
        if not self.scaler.is_enabled() and not math.isfinite(grad_norm):
            raise NonFiniteLoss("gradient norm", grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss_value, grad_norm


@dataclass
class TrainingSetup:
    """Everything the engine needs for one run (built once by a method; shared with the benchmarks).

    ``extra_log`` adds fields to every per-step log record (e.g. AdPE's ‖δ‖); ``publish`` writes
    extra finished artefacts (e.g. the encoder alone) before the weights mark the run complete,
    adding the metadata it is given (the truncation record of a ``max_steps`` run, else nothing).
    ``train_module`` is what ``loss_fn`` runs and DDP wraps when it is not ``model`` itself (MJP's
    shuffled forward around the ViT); ``model`` is what is saved and resumed. ``validate`` scores
    ``model`` on held-out data every ``settings.validate_every`` epochs and after the last one.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler
    data: TrainData
    loss_fn: LossFn
    settings: LoopSettings
    extra_log: Callable[[], dict[str, float]] | None = None
    publish: Callable[[nn.Module, Path, dict[str, Any]], None] | None = None
    train_module: nn.Module | None = None
    validate: Validate | None = None

    @property
    def forward_module(self) -> nn.Module:
        """The module ``loss_fn`` expects."""
        return self.model if self.train_module is None else self.train_module

    def run(self, env: DistEnv, out_dir: Path, max_steps: int | None = None) -> Path:
        return run_training(model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                            data=self.data, loss_fn=self.loss_fn, settings=self.settings, env=env,
                            out_dir=Path(out_dir), max_steps=max_steps, extra_log=self.extra_log,
                            publish=self.publish, train_module=self.forward_module, validate=self.validate)


@dataclass
class _Position:
    step: int = 0  # optimizer steps completed
    epoch: int = 0
    batch: int = 0  # micro-batches consumed in ``epoch``


def validate_neutrally(model: nn.Module, validate: Validate, env: DistEnv) -> dict[str, float] | None:
    """``validate(model)`` on rank 0 in eval mode, leaving training exactly as it was: every module's
    mode and every RNG stream (a DataLoader draws its seed from torch's) are restored, so a run with
    validations computes the same weights, bit for bit, as one without. Other ranks wait (None)."""
    scores = None
    if env.is_main:
        rng, modes = capture_rng(env.device), [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            with torch.no_grad():
                scores = validate(model)
        finally:
            for module, training in modes:
                module.training = training
            restore_rng(rng, env.device)
    barrier(env)
    return scores


def run_training(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Scheduler,
    data: TrainData,
    loss_fn: LossFn,
    settings: LoopSettings,
    env: DistEnv,
    out_dir: Path,
    max_steps: int | None = None,
    extra_log: Callable[[], dict[str, float]] | None = None,
    publish: Callable[[nn.Module, Path, dict[str, Any]], None] | None = None,
    train_module: nn.Module | None = None,
    validate: Validate | None = None,
) -> Path:
    """Train to the end (or to ``max_steps``), resuming from ``out_dir/state/state.pt`` if present.

    Work in progress (``state.pt`` and the growing ``log.jsonl``) lives in ``out_dir/state/``:
    Snakemake deletes a job's declared outputs before rerunning it, so only finished artefacts may
    sit where the rule declares them. On completion the log is published to ``out_dir/log.jsonl``
    (its scalars' dvclive folder to ``out_dir/dvclive/``) and then ``out_dir/model.safetensors``
    (written last: it marks completion), and ``state/`` is removed; returns the weights path.

    ``max_steps`` (a global step count) means "train up to N steps and publish": the log and the
    weights are published as on completion, with ``{"truncated": {"steps", "total_steps"}}`` in
    the weights' metadata (and in ``publish``'s), so downstream stages can run on them; ``state/``
    is kept, so a rerun without ``max_steps`` continues to the bitwise-identical complete run.
    Returns the state path then. Raises Preempted after checkpointing on SIGTERM/SIGUSR1 and
    TrainingDiverged on a NaN/inf loss (no weights written in either case).

    Rank 0 holds ``state/trainer.lock`` (vitpe.train.lock) for the whole run: a second trainer started
    on the same ``out_dir`` while this one lives is refused (InUse) before it touches the state or log.
    """
    state_dir = Path(out_dir) / STATE_DIR
    refused: InUse | None = None
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(exclusive_lock(state_dir / LOCK_NAME, f"{out_dir} (a training output folder)",
                                               enabled=env.is_main))
        except InUse as exc:
            refused = exc
        if any_rank(refused is not None, env):  # every rank stops, not only the refused rank 0
            raise refused or InUse(f"{out_dir}: in use by another trainer (refused by rank 0)")
        return _train(model=model, optimizer=optimizer, scheduler=scheduler, data=data, loss_fn=loss_fn,
                      settings=settings, env=env, out_dir=Path(out_dir), max_steps=max_steps, extra_log=extra_log,
                      publish=publish, train_module=train_module, validate=validate)


def _train(*, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Scheduler, data: TrainData,
           loss_fn: LossFn, settings: LoopSettings, env: DistEnv, out_dir: Path, max_steps: int | None,
           extra_log: Callable[[], dict[str, float]] | None,
           publish: Callable[[nn.Module, Path, dict[str, Any]], None] | None,
           train_module: nn.Module | None, validate: Validate | None) -> Path:
    """run_training's body, under the output folder's lock."""
    state_dir = out_dir / STATE_DIR
    state_path, log_path, weights_path = state_dir / STATE_NAME, state_dir / LOG_NAME, out_dir / WEIGHTS_NAME
    total = settings.total_steps
    batches_per_epoch = settings.steps_per_epoch * settings.accum_steps
    stop_at = total if max_steps is None else min(max_steps, total)

    pos, saved = _Position(), None
    resumed_state = load_state(state_path) if state_path.exists() else None
    if resumed_state is not None:
        check_fingerprint(resumed_state, settings.fingerprint, state_path)
        load_timm_state_dict(model, resumed_state["model"], source=str(state_path))
        optimizer.load_state_dict(resumed_state["optimizer"])
        scheduler.load_state_dict(resumed_state["scheduler"])
        pos = _Position(resumed_state["step"], resumed_state["epoch"], resumed_state["batch"])
        saved = pos.step
    ddp_model = wrap_ddp(model if train_module is None else train_module, env, settings.find_unused_parameters)
    if settings.compile:  # after DDP, so its gradient buckets overlap the compiled backward
        # random ops (MAE's masking noise) through ATen, as in eager mode: the same masks, not inductor's
        ddp_model = torch.compile(ddp_model, options={"fallback_random": True})
    runner = StepRunner(ddp_model, optimizer, loss_fn, accum_steps=settings.accum_steps,
                        clip_grad=settings.clip_grad, amp=settings.amp, env=env)
    if resumed_state is not None:
        if runner.scaler.is_enabled() and resumed_state["scaler"]:
            runner.scaler.load_state_dict(resumed_state["scaler"])
        if len(resumed_state["rng"]) != env.world_size:
            raise CheckpointError(f"{state_path}: written by {len(resumed_state['rng'])} processes, "
                                  f"resumed with {env.world_size}")
        # Last, so nothing in the set-up above (model init, ...) shifts the restored streams.
        restore_rng(resumed_state["rng"][env.rank], env.device)
        del resumed_state

    if env.is_main:
        make_dirs(state_dir)
        if saved is None:
            log_path.unlink(missing_ok=True)  # a log without a state belongs to an abandoned run
        else:
            truncate_log(log_path, saved)
    logger = StepLogger(log_path, total, saved, enabled=env.is_main, live_dir=state_dir / LIVE_DIR)
    if saved is not None:
        logger.message(f"resuming from {state_path} at step {saved}/{total} (epoch {pos.epoch})")
    else:
        logger.message(f"training {total} steps ({settings.epochs} epochs x {settings.steps_per_epoch}) "
                       f"on {env.world_size} process(es), {env.device}, {torch.get_num_threads()} CPU thread(s)")

    def checkpoint() -> None:
        rng = gather_objects(capture_rng(env.device), env)
        if env.is_main:
            save_state(state_path, {
                "fingerprint": fingerprint_json(settings.fingerprint),
                "step": pos.step, "epoch": pos.epoch, "batch": pos.batch,
                "model": to_timm_state_dict(model),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": runner.scaler.state_dict(),
                "rng": rng,
            })
        barrier(env)

    images_per_step = data.batch_size * settings.accum_steps * env.world_size
    model.train()
    batches = None
    try:
        with PreemptionGuard() as guard:
            tick = time.perf_counter()
            while pos.step < stop_at:
                if batches is None:
                    batches = iter(data.loader(pos.epoch, pos.batch))
                micro = [next(batches) for _ in range(settings.accum_steps)]
                scheduler.step_update(pos.step)
                # the weights' lr (AdPE's ascending δ group has its own, scaled one)
                lr = max(group["lr"] for group in optimizer.param_groups if not group.get("adversarial"))
                try:
                    loss, grad_norm = runner(micro, pos.epoch)
                except NonFiniteLoss as exc:
                    last_good = f"{state_path} (step {saved}) kept" if saved is not None else "no checkpoint yet"
                    raise TrainingDiverged(
                        f"{exc} at step {pos.step + 1} (epoch {pos.epoch}); weights not saved; "
                        f"last good state: {last_good}") from None
                epoch = pos.epoch
                pos.step += 1
                pos.batch += settings.accum_steps
                if pos.batch >= batches_per_epoch:  # leftover micro-batches (< accum_steps) are dropped
                    pos.epoch, pos.batch, batches = pos.epoch + 1, 0, None
                now = time.perf_counter()
                record = {"step": pos.step, "epoch": epoch, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                          "imgs_per_s": images_per_step / max(now - tick, 1e-9)}
                logger.log({**record, **(extra_log() if extra_log is not None else {})})
                every = settings.validate_every
                if validate is not None and every and pos.batch == 0 and (pos.epoch % every == 0 or pos.step == total):
                    scores = validate_neutrally(model, validate, env)
                    logger.validation({"step": pos.step, "epoch": epoch, "validation": scores})
                tick = time.perf_counter()
                preempt = any_rank(guard.requested, env)
                if preempt or pos.step == stop_at or pos.step % settings.checkpoint_every == 0:
                    checkpoint()
                    saved = pos.step
                if preempt:
                    raise Preempted(f"received {guard.received or 'a pre-emption signal'}; state at step "
                                    f"{pos.step}/{total} saved to {state_path}; rerun the command to resume")
    finally:
        close_batches(batches)  # loader workers stop now, also while an exception propagates
        batches = None
        data.close()
        logger.close()

    truncated = {"truncated": {"steps": pos.step, "total_steps": total}} if pos.step < total else {}
    if env.is_main:
        with atomic_path(out_dir / LOG_NAME) as tmp:
            shutil.copyfile(log_path, tmp)
        publish_folder(state_dir / LIVE_DIR, out_dir / LIVE_DIR)
        if publish is not None:
            publish(model, out_dir, truncated)
        save_weights(model, weights_path, {**settings.weights_metadata, **truncated})
        if not truncated:
            # finished: the state would only block a rerun with changed parameters (and bloat the DVC cache)
            shutil.rmtree(state_dir)
    barrier(env)
    if truncated:
        logger.message(f"stopped at step {pos.step}/{total} (--max-steps): weights published as truncated, "
                       f"state kept in {state_path} (rerun without --max-steps to continue)")
        return state_path
    return weights_path
