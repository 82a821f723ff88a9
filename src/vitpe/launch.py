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

``python -m vitpe.launch snakemake ARGS...`` (``make run``, each DVC stage) runs the workflow so that a
hard kill needs no manual step: it takes an exclusive flock on ``.snakemake/vitpe-run.lock`` (refused
with one line, exit 1, while another such run lives); holding it, no run of ours is alive, so a
Snakemake lock left by a killed run is stale and is removed (``snakemake --unlock``), unless a Snakemake
started directly is running in this directory; then it becomes ``snakemake --rerun-incomplete ARGS``
(exec: the flock stays held by Snakemake itself and the kernel drops it when Snakemake dies).

Snakemake decides by file times, and ``dvc checkout``/``dvc pull`` give the files they restore new
ones, so after a checkout Snakemake would retrain and re-evaluate everything downstream of a
checkpoint (file checksums spare only files under ``--max-checksum-file-size``, and only where
Snakemake recorded them). When ``dvc status`` says the workspace is what ``dvc.lock`` records, the
outputs are by DVC's definition those of the current code and parameters, so the launcher first runs
``snakemake --touch`` with the same arguments: the file times are put in order and nothing reruns.
Inside DVC's own stages (``dvc repro``, which runs only what changed) this is skipped; there the
launcher first checks that dvc.yaml's stages are those of params.yaml (``vitpe.dvc_stages``).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType

from vitpe.errors import InUse, Preempted
from vitpe.train.lock import exclusive_lock
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


WORKFLOW_LOCK = Path(".snakemake") / "vitpe-run.lock"
SNAKEMAKE_LOCKS = Path(".snakemake") / "locks"  # Snakemake's own (file persistence): stale after a kill


def _beside_python(tool: str) -> Path | None:
    """``tool`` installed next to this interpreter (the project's .venv), if it is."""
    beside = Path(sys.executable).parent / tool
    return beside if beside.is_file() else None


def _snakemake() -> str:
    """The Snakemake next to this interpreter, else the one on PATH."""
    return str(_beside_python("snakemake") or "snakemake")


def _direct_snakemake_runs() -> list[int]:
    """Pids of other Snakemake processes whose working directory is this one (Linux /proc; none elsewhere)."""
    here, found = Path.cwd().resolve(), []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if int(proc.name) != os.getpid() and any(Path(a.decode(errors="replace")).name == "snakemake"
                                                     for a in argv[:3]) and (proc / "cwd").resolve() == here:
                found.append(int(proc.name))
        except (OSError, ValueError):  # gone meanwhile, or another user's
            continue
    return found


DRY_RUN_FLAGS = {"-n", "--dry-run", "--dryrun"}


def _workspace_matches_dvc_lock() -> bool:
    """Whether ``dvc status`` reports nothing: the outputs, dependencies and parameters are the ones
    ``dvc.lock`` records. False outside a DVC repository, inside a DVC stage, or without dvc."""
    dvc = _beside_python("dvc")
    if os.environ.get("DVC_STAGE") or dvc is None or not (Path(".dvc").is_dir() and Path("dvc.lock").is_file()):
        return False
    status = subprocess.run([str(dvc), "status", "--json"], capture_output=True, text=True)
    try:
        return status.returncode == 0 and json.loads(status.stdout or "null") == {}
    except json.JSONDecodeError:
        return False


def _touch_if_dvc_current(snakemake: str, args: list[str]) -> int:
    """``snakemake --touch ARGS`` (dry-run flags left out) when the workspace is what dvc.lock records."""
    if not _workspace_matches_dvc_lock():
        return 0
    print("vitpe.launch: dvc status: the outputs are the ones dvc.lock records; marking them current "
          "for Snakemake (snakemake --touch), so file times from a checkout retrain nothing",
          file=sys.stderr, flush=True)
    touch = [snakemake, "--rerun-incomplete", *(a for a in args if a not in DRY_RUN_FLAGS), "--touch", "--quiet"]
    return subprocess.run(touch).returncode


def _console_logger(args: list[str]) -> list[str]:
    """``--logger=vitpe`` (src/snakemake_logger_plugin_vitpe: file lists cut short on the console)
    unless ARGS choose a logger; the ``=`` form, as ``--logger`` takes several values and would
    swallow the targets after it."""
    return [] if any(a.split("=")[0] == "--logger" for a in args) else ["--logger=vitpe"]


def run_snakemake(args: list[str]) -> int:
    """``snakemake --rerun-incomplete ARGS`` under the workflow lock, after removing a stale Snakemake lock.

    Returns only on refusal (exit 1) or a failed unlock; otherwise this process becomes Snakemake."""
    snakemake = _snakemake()
    try:
        with exclusive_lock(WORKFLOW_LOCK, "this workflow (another `python -m vitpe.launch snakemake` run)") as fd:
            if SNAKEMAKE_LOCKS.is_dir() and any(SNAKEMAKE_LOCKS.iterdir()):
                direct = _direct_snakemake_runs()
                if direct:
                    raise InUse(f"{SNAKEMAKE_LOCKS}: held by a Snakemake started directly (pid "
                                f"{', '.join(map(str, direct))}); wait for it to finish or stop it")
                print(f"vitpe.launch: removing the Snakemake lock left by a killed run ({SNAKEMAKE_LOCKS})",
                      file=sys.stderr, flush=True)
                unlocked = subprocess.run([snakemake, *args, "--unlock"])
                if unlocked.returncode != 0:
                    return unlocked.returncode
            if os.environ.get("DVC_STAGE"):  # a stage of dvc.yaml: refuse one left over from another params.yaml
                from vitpe.dvc_stages import stale_message

                stale = stale_message()
                if stale:
                    print(f"error: {stale}", file=sys.stderr)
                    return 1
            touched = _touch_if_dvc_current(snakemake, args)
            if touched != 0:
                return touched
            os.set_inheritable(fd, True)  # Snakemake holds the flock from here on, until it exits
            os.execvp(snakemake, [snakemake, "--rerun-incomplete", *_console_logger(args), *args])
    except InUse as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0  # not reached: exec replaced this process


def main(argv: list[str] | None = None) -> int:
    command = sys.argv[1:] if argv is None else argv
    if not command:
        print("error: usage: python -m vitpe.launch LAUNCHER [ARGS...] (torchrun --standalone ..., or "
              "snakemake ARGS: the workflow under its run lock)", file=sys.stderr)
        return 2
    if command[0] == "snakemake":
        return run_snakemake(command[1:])
    return run(command)


if __name__ == "__main__":
    sys.exit(main())
