"""A checkpoint hook whose files load with ``torch.load(weights_only=True)``, and pre-emption.

mmengine 0.10.7's ``CheckpointHook`` saves the message hub (``HistoryBuffer`` objects holding numpy
arrays) and other objects torch >= 2.6 refuses to unpickle by default (mmengine#1655;
docs/FIDELITY.md row 36). This hook writes the same layout ``Runner.resume`` reads (meta, state_dict,
optimizer, param_schedulers, message_hub) with tensors and plain types only: the smoothed log windows
(``log_scalars``, HistoryBuffer objects) are saved as lists and rebuilt on load, so the logged averages
of a resumed run are the uninterrupted run's. The file is written
atomically. SIGTERM/SIGUSR1 (SLURM pre-emption) save at the next iteration and raise ``Preempted``
(the CLI exits 124 for a requeue), as the project's own training loop does.

A resumed run repeats the uninterrupted one bit for bit (on the same thread count and world size):
the state holds every rank's RNG streams, restored once mmengine has advanced the data loader past
the trained iterations (that replay draws augmentations from the same streams), and validation
runs between save and restore points of the streams, so it draws nothing from training's
(docs/FIDELITY.md row 72). The dataset's metainfo is saved as mmengine saves it, so a resume does not
warn that it differs.

``Runner.resume`` reads the state through mmengine's ``CheckpointLoader``, whose local loader calls a
bare ``torch.load``: with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` in the environment that unpickles
arbitrary objects. The runner resumes through ``resume_uri(path)`` instead, a scheme registered here
that always loads with ``weights_only=True`` (an explicit argument that variable cannot override).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.dist import get_rank, get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import CheckpointLoader

from vitpe.errors import CheckpointError, Preempted
from vitpe.io import atomic_path
from vitpe.models.weights import load_weights_only
from vitpe.train.checkpoint import capture_rng, restore_rng
from vitpe.train.distributed import DistEnv, any_rank, gather_objects
from vitpe.train.signals import PreemptionGuard

STATE_NAME = "last.pth"
RESUME_SCHEME = "vitpe-state://"
_DROP = object()


def resume_uri(path: str | Path) -> str:
    """What ``cfg.load_from`` names to resume from ``path`` through ``load_training_state``."""
    return RESUME_SCHEME + str(path)


@CheckpointLoader.register_scheme(prefixes=RESUME_SCHEME)
def load_training_state(uri: str, map_location: Any = None, mmap: bool = False) -> dict[str, Any]:
    """A training state written by this hook, loaded with weights_only=True whatever the environment."""
    path = uri[len(RESUME_SCHEME):] if uri.startswith(RESUME_SCHEME) else uri
    state = load_weights_only(path, "transfer training state", map_location, mmap=mmap)
    if not isinstance(state, dict) or not {"meta", "state_dict"} <= set(state):
        raise CheckpointError(f"{path}: not a transfer training state (expected a dict with meta and state_dict); "
                              "delete it to restart this run")
    hub = state.get("message_hub", {})
    hub["log_scalars"] = {key: HistoryBuffer(window["log"], window["count"], window["max_length"])
                          for key, window in hub.get("log_scalars", {}).items()}
    return state


def resumed_iteration(path: Path) -> int:
    """The iteration a training state resumes from, read without loading its tensors (memory-mapped)."""
    return int(load_training_state(str(path), "cpu", mmap=True)["meta"]["iter"])


def plain(obj: Any) -> Any:
    """``obj`` with tensors (on CPU) and plain types only; anything else is dropped."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, np.generic):  # before float: np.float64 is a float subclass but pickles as numpy
        return obj.item()
    if isinstance(obj, (bool, int, float, str)) or obj is None:
        return obj
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, dict):
        out = {k: plain(v) for k, v in obj.items() if isinstance(k, (str, int))}
        return {k: v for k, v in out.items() if v is not _DROP}
    if isinstance(obj, (list, tuple)):
        items = [v for v in (plain(v) for v in obj) if v is not _DROP]
        return tuple(items) if isinstance(obj, tuple) else items  # pickled as they came (the metainfo check)
    return _DROP


def dist_env() -> DistEnv:
    """The process's place in mmengine's process group, as the project's training loop describes it."""
    return DistEnv(rank=get_rank(), world_size=get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                   device=_device())


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def training_state(runner, rng: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``Runner.resume`` needs, weights_only-loadable (iteration-based loops), with ``rng``: every
    rank's RNG streams."""
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    schedulers = runner.param_schedulers
    if isinstance(schedulers, dict):
        sched_state: Any = {k: [s.state_dict() for s in v] for k, v in schedulers.items()}
    else:
        sched_state = [s.state_dict() for s in schedulers or []]
    hub = runner.message_hub.state_dict()
    meta = {"epoch": runner.epoch, "iter": runner.iter + 1, "seed": runner.seed}
    dataset_meta = getattr(runner.train_dataloader.dataset, "metainfo", None)
    if dataset_meta is not None and plain(dataset_meta) == dataset_meta:  # kept only if it round-trips
        meta["dataset_meta"] = dataset_meta
    return plain({
        "meta": meta,
        "rng": rng,
        "state_dict": model.state_dict(),
        "optimizer": runner.optim_wrapper.state_dict(),
        "param_schedulers": sched_state,
        "message_hub": {"log_scalars": {key: {"log": list(buffer.data[0]), "count": list(buffer.data[1]),
                                              "max_length": buffer.max_length}
                                        for key, buffer in hub["log_scalars"].items()},
                        "runtime_info": hub["runtime_info"], "resumed_keys": {}},
    })


@HOOKS.register_module(name="VitpeCheckpointHook")
class TensorCheckpointHook(Hook):
    """Every ``interval`` iterations (and on pre-emption) write ``<work_dir>/state/last.pth``."""

    priority = "VERY_LOW"

    def __init__(self, interval: int, state_dir: str = "state") -> None:
        self.interval = interval
        self.state_dir = state_dir
        self._guard: PreemptionGuard | None = None
        self._resumed_rng: dict[str, Any] | None = None  # this rank's streams at the resumed iteration
        self._training_rng: dict[str, Any] | None = None  # set aside while validation runs

    def state_path(self, runner) -> Path:
        return Path(runner.work_dir) / self.state_dir / STATE_NAME

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        rng = checkpoint.get("rng") or []
        if len(rng) == get_world_size():
            self._resumed_rng = rng[get_rank()]
        elif rng:
            runner.logger.warning(f"state written by {len(rng)} process(es), resumed on {get_world_size()}: "
                                  "the random streams start afresh, so the run will not repeat bit for bit")

    def before_train(self, runner) -> None:
        self._guard = PreemptionGuard().__enter__()

    def before_train_epoch(self, runner) -> None:
        """Restore the saved streams once mmengine has replayed the data loader up to the resumed
        iteration (IterBasedTrainLoop.run advances it right after this hook)."""
        if self._resumed_rng is None:
            return
        loop, restore = runner.train_loop, functools.partial(restore_rng, self._resumed_rng, _device())
        self._resumed_rng = None
        if loop.iter == 0:
            restore()
        else:
            loop.dataloader_iterator = _RestoreAfterReplay(loop, loop.iter, restore)

    def before_val_epoch(self, runner) -> None:
        self._training_rng = capture_rng(_device())

    def after_val_epoch(self, runner, metrics: Any = None) -> None:
        if self._training_rng is not None:
            restore_rng(self._training_rng, _device())
            self._training_rng = None

    def after_train(self, runner) -> None:
        if self._guard is not None:
            self._guard.__exit__(None, None, None)
            self._guard = None

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        # every rank stops at the same iteration (and takes part in the save's gather), whichever saw the signal
        preempted = any_rank(self._guard is not None and self._guard.requested, dist_env())
        # the last iteration too: a failure in the evaluation that follows then does not retrain
        done = runner.iter + 1 >= runner.max_iters
        if preempted or done or self.every_n_train_iters(runner, self.interval):
            self.save(runner)
        if preempted:
            received = (self._guard.received if self._guard else None) or "a signal on another rank"
            self.after_train(runner)
            raise Preempted(f"{received} received: state saved at iteration {runner.iter + 1}; "
                            "rerun to resume")

    def save(self, runner) -> None:
        env = dist_env()
        rng = gather_objects(capture_rng(env.device), env)  # every rank takes part
        if not is_main_process():
            return
        state = training_state(runner, rng)
        with atomic_path(self.state_path(runner)) as tmp:
            torch.save(state, tmp)


class _RestoreAfterReplay:
    """Stands in for the loop's data iterator while mmengine replays ``replayed`` batches to skip what
    was trained, then calls ``restore`` and hands the loop its iterator back."""

    def __init__(self, loop: Any, replayed: int, restore: Any) -> None:
        self.loop, self.inner, self.left, self.restore = loop, loop.dataloader_iterator, replayed, restore

    def __iter__(self) -> "_RestoreAfterReplay":
        return self

    def __next__(self) -> Any:
        batch = next(self.inner)
        self.left -= 1
        if self.left == 0:
            self.restore()
            self.loop.dataloader_iterator = self.inner
        return batch
