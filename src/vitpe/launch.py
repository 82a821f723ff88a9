"""``python -m vitpe.launch torchrun ARGS...``: a multi-process launch that keeps the pre-emption contract.

A single ``vitpe`` process saves its state on SIGTERM/SIGUSR1 and exits 124, which the workflow
documents as "pre-empted, rerun to resume". torchrun (2.14) does not pass that on: its elastic agent
turns SIGTERM into a SignalException, forwards the signal to the workers, waits for them and exits 1;
when the workers stop with 124 on their own it reports failed children, also with exit code 1; and
SIGUSR1, not in its default signal list, kills it outright and leaves the workers running.

This wrapper runs the launcher command given to it and:
- makes torchrun forward SIGUSR1 as well and give the workers ``SHUTDOWN_TIMEOUT_S`` to save (through
  torchrun's own ``PET_SIGNALS_TO_HANDLE`` / ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT``, unless already set);
- forwards the pre-emption signals (and SIGINT) it receives to the launcher;
- exits 124 when a worker wrote the marker file named in ``PREEMPTED_MARKER_ENV`` (the CLI writes it
  after Preempted, so only once the state is saved), and with the launcher's exit code otherwise.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType

from vitpe.errors import Preempted
from vitpe.train.signals import PREEMPTED_MARKER_ENV, PREEMPTION_SIGNALS

FORWARDED_SIGNALS = (*PREEMPTION_SIGNALS, signal.SIGINT)
# torchrun's defaults plus SIGUSR1, so a USR1 sent to torchrun alone reaches the workers
TORCHRUN_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
# Seconds torchrun waits for the workers after forwarding a signal before it kills them (its default
# is 30): a worker first finishes its step, then writes the full training state (ViT-B + AdamW
# moments: about 1.3 GB). Less than the 600 s of warning the SLURM profile asks for.
SHUTDOWN_TIMEOUT_S = 300


class _Forwarder:
    """Signal handler passing signals on to the child; one that arrives before the child exists waits."""

    def __init__(self) -> None:
        self.child: subprocess.Popen | None = None
        self.pending: list[int] = []

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.child is None:
            self.pending.append(signum)
        elif self.child.poll() is None:
            self.child.send_signal(signum)

    def attach(self, child: subprocess.Popen) -> None:
        self.child = child
        for signum in self.pending:
            child.send_signal(signum)


def run(command: list[str]) -> int:
    """Run ``command`` (a launcher such as torchrun); 124 when its workers were pre-empted and saved."""
    forward = _Forwarder()
    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        with tempfile.TemporaryDirectory(prefix="vitpe-launch-") as tmp:
            marker = Path(tmp) / "preempted"
            env = {**os.environ, PREEMPTED_MARKER_ENV: str(marker)}
            env.setdefault("PET_SIGNALS_TO_HANDLE", TORCHRUN_SIGNALS)
            env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(SHUTDOWN_TIMEOUT_S))
            try:
                child = subprocess.Popen(command, env=env)
            except OSError as exc:
                print(f"error: cannot start {command[0]!r}: {exc.strerror}", file=sys.stderr)
                return 127
            forward.attach(child)
            code = child.wait()
            if marker.exists():
                return Preempted.exit_code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code if code >= 0 else 128 - code  # killed by a signal: the shell's convention


def main(argv: list[str] | None = None) -> int:
    command = sys.argv[1:] if argv is None else argv
    if not command:
        print("error: usage: python -m vitpe.launch LAUNCHER [ARGS...] (e.g. torchrun --standalone ...)",
              file=sys.stderr)
        return 2
    return run(command)


if __name__ == "__main__":
    sys.exit(main())
