"""``python -m vitpe.launch``: a pre-empted multi-process run exits 124, as a single process does.

torchrun alone exits 1 when its workers stop on SIGTERM (its elastic agent raises SignalException),
so the workflow's launch command wraps it; see src/vitpe/launch.py.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
import torch

from conftest import BIN, ROOT, make_image_folder, micro_params_file
from vitpe.launch import main as launch_main


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _child(tmp_path, body: str) -> list[str]:
    """A stand-in launcher: a Python script with ``body`` (the marker path in ``marker``)."""
    script = tmp_path / "child.py"
    script.write_text("import os, signal, sys, time\nmarker = os.environ['VITPE_PREEMPTED_MARKER']\n"
                      + textwrap.dedent(body))
    return [sys.executable, str(script)]


def test_exit_124_only_when_a_worker_saved_its_state(tmp_path):
    # a worker wrote the marker (after Preempted), the launcher exited 1 like torchrun: 124
    assert launch_main(_child(tmp_path, "open(marker, 'w').close(); sys.exit(1)")) == 124
    # a plain failure keeps its code; a launcher killed by a signal reads as the shell writes it
    assert launch_main(_child(tmp_path, "sys.exit(3)")) == 3
    assert launch_main(_child(tmp_path, "os.kill(os.getpid(), signal.SIGKILL)")) == 128 + 9
    assert launch_main(_child(tmp_path, "sys.exit(0)")) == 0


def test_torchrun_settings_reach_the_launcher(tmp_path):
    # SIGUSR1 forwarded to the workers, and time for them to save, unless the caller set otherwise
    check = "sys.exit(0 if os.environ['PET_SIGNALS_TO_HANDLE'].endswith('SIGUSR1') and " \
            "os.environ['TORCH_ELASTIC_SHUTDOWN_TIMEOUT'] == '300' else 5)"
    assert launch_main(_child(tmp_path, check)) == 0


def test_missing_launcher_is_one_line_and_exit_127(tmp_path, capsys):
    assert launch_main([str(tmp_path / "no-such-launcher")]) == 127
    assert capsys.readouterr().err.startswith(f"error: cannot start '{tmp_path / 'no-such-launcher'}'")


def test_sigterm_to_the_wrapper_is_forwarded(tmp_path):
    ready = tmp_path / "ready"
    body = f"""
        def stop(signum, frame):
            open(marker, 'w').close()  # the worker saved its state
            sys.exit(1)
        signal.signal(signal.SIGTERM, stop)
        open({str(ready)!r}, 'w').close()
        time.sleep(60)
        sys.exit(2)
    """
    proc = subprocess.Popen([sys.executable, "-m", "vitpe.launch", *_child(tmp_path, body)], env=_env())
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 124


@pytest.mark.slow
def test_sigterm_to_torchrun_exits_124_then_the_rerun_resumes(tmp_path):
    """Two gloo processes under the workflow's launch command; SIGTERM to torchrun (as SLURM sends it)."""
    make_image_folder(tmp_path / "data" / "imagenet")
    # 20 images / (2 processes x 2) = 5 steps per epoch: 1000 steps, checkpoints only on the signal
    params = micro_params_file(tmp_path, tmp_path / "data", epochs=200, checkpoint_every=100000)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "vitpe.launch", "torchrun", "--standalone", "--nproc-per-node=2",
               "-m", "vitpe", "train", "supervised", "--params", str(params), "--experiment", "deit_s",
               "--device", "cpu", "--out", str(out)]

    proc = subprocess.Popen(command, env=_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    log = out / "state" / "log.jsonl"
    deadline = time.monotonic() + 300
    while not (log.exists() and len(log.read_text().splitlines()) >= 2):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.01)
    (torchrun,) = [p for p in psutil.Process(proc.pid).children() if "torchrun" in " ".join(p.cmdline())]
    torchrun.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 124, stderr[-3000:]
    assert "preempted: received SIGTERM" in stderr and "rerun the command to resume" in stderr
    state = torch.load(out / "state" / "state.pt", weights_only=True)
    assert 2 <= state["step"] < 1000 and len(state["rng"]) == 2  # saved at the step after the signal, both ranks
    assert not (out / "model.safetensors").exists()

    resumed = subprocess.run(command, env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {out / 'state' / 'state.pt'} at step {state['step']}/1000" in resumed.stderr
    assert (out / "model.safetensors").exists() and not (out / "state").exists()
