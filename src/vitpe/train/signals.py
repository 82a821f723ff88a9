"""SLURM pre-emption: SIGTERM/SIGUSR1 only set a flag; the training loop checkpoints at the next
step boundary and raises Preempted (the CLI then exits 124 so the job can be requeued).

Doing the work in the loop instead of the handler keeps the checkpoint consistent: a handler runs
between arbitrary bytecodes, possibly halfway through an optimizer step.

Under torchrun the exit code of a worker does not reach the job: the launcher wrapper
(``vitpe.launch``) names a marker file in ``PREEMPTED_MARKER_ENV`` and exits 124 once a worker has
written it (``mark_preempted``, called by the CLI after Preempted, i.e. after the state is saved).
"""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from types import FrameType, TracebackType

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
PREEMPTED_MARKER_ENV = "VITPE_PREEMPTED_MARKER"


def mark_preempted() -> None:
    """Tell the launcher wrapper, if there is one, that this process saved its state and stopped."""
    marker = os.environ.get(PREEMPTED_MARKER_ENV)
    if marker:
        Path(marker).touch()


class PreemptionGuard:
    """Context manager installing the flag-setting handlers (main thread only; restored on exit)."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum).name

    def __enter__(self) -> PreemptionGuard:
        # Python only allows handlers in the main thread; elsewhere (e.g. a test harness thread)
        # training still runs, just without pre-emption handling.
        if threading.current_thread() is threading.main_thread():
            for sig in PREEMPTION_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
