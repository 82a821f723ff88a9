"""Failure classes a new user meets: damage only decoding reveals, two trainers on one output folder,
a resume on another thread count, a workflow killed hard (its Snakemake lock left behind), checkpoint
files that are not what a command expects, and output paths that cannot be written."""
from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from conftest import ROOT, copy_workflow, make_image_folder, micro_params, micro_params_file, run
from vitpe.cli import main
from vitpe.data import check
from vitpe.train.engine import LOCK_NAME, STATE_DIR
from vitpe.train.lock import exclusive_lock

PYTHON = [sys.executable]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **extra}


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# --- 1. vitpe data check --deep ----------------------------------------------------------------------

IMAGES = 70  # more than a quick check's sample of 64: some files are only read by --deep


def _jpeg_folder(root: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    (root / "n0").mkdir(parents=True)
    files = [root / "n0" / f"{i:03d}.JPEG" for i in range(IMAGES)]
    for file in files:
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(file, quality=90)
    return files


def _unsampled(files: list[Path]) -> Path:
    return next(f for f in files if f not in check._sample(files, every=False))


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) * 2 // 3])  # the header parses; only decoding finds the cut


def _corrupt_png_chunk(file: Path) -> None:
    """A PNG in place of the file, its image data (IDAT) scrambled: it opens; decoding fails."""
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(file, format="PNG")
    data = bytearray(file.read_bytes())
    start = data.index(b"IDAT") + 4
    data[start + 8:start + 40] = bytes(range(32))
    file.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [
    _truncate,
    lambda file: file.write_bytes(b""),  # zero bytes
    _corrupt_png_chunk,
    lambda file: file.write_text("<html>404 Not Found</html>\n"),  # a .JPEG name, not an image
], ids=["truncated-jpeg", "zero-byte", "png-corrupt-chunk", "not-an-image"])
def test_deep_check_names_the_first_file_only_decoding_finds_bad(tmp_path, capsys, damage):
    files = _jpeg_folder(tmp_path / "set")
    bad = _unsampled(files)
    damage(bad)
    _truncate(files[-1])  # also bad, after the first: the message names the first one
    report = tmp_path / "report.json"
    assert main(["data", "check", "--kind", "imagefolder", "--path", str(tmp_path / "set"), "--out", str(report),
                 "--deep"]) == 2
    msg = _one_error_line(capsys.readouterr().err)
    assert msg.startswith(f"error: {bad}: not a readable image (")
    assert not report.exists()  # nothing Snakemake could take for a passed check


def test_quick_check_passes_what_only_a_deep_check_finds(tmp_path, capsys):
    files = _jpeg_folder(tmp_path / "set")
    bad = _unsampled(files)
    _truncate(bad)
    assert main(["data", "check", "--kind", "imagefolder", "--path", str(tmp_path / "set")]) == 0
    assert main(["data", "check", "--kind", "imagefolder", "--path", str(tmp_path / "set"), "--deep"]) == 2
    assert str(bad) in capsys.readouterr().err


def test_deep_check_is_strict_even_if_a_library_pads_truncated_images(tmp_path, capsys, monkeypatch):
    """Some libraries set ImageFile.LOAD_TRUNCATED_IMAGES = True process-wide: Pillow then pads a cut-off
    JPEG with grey and reports nothing."""
    files = _jpeg_folder(tmp_path / "set")
    _truncate(files[5])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert main(["data", "check", "--kind", "imagefolder", "--path", str(tmp_path / "set"), "--deep"]) == 2
    assert str(files[5]) in capsys.readouterr().err
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored after the check


def test_deep_check_logs_progress_and_decodes_everything(tmp_path, capsys, monkeypatch):
    _jpeg_folder(tmp_path / "set")
    monkeypatch.setattr(check, "PROGRESS_EVERY", 20)
    monkeypatch.setattr(check, "CHUNK", 10)
    report = tmp_path / "report.json"
    assert main(["data", "check", "--kind", "imagefolder", "--path", str(tmp_path / "set"), "--deep",
                 "--out", str(report)]) == 0
    out = capsys.readouterr().out
    progress = [line.split(" ", 2)[-1] for line in out.splitlines() if "images of" in line]  # after the time
    assert progress == [f"decoded {n}/70 images of {tmp_path / 'set'}" for n in (20, 40, 60)]
    assert out.count("check: ") == 1  # the one summary line per dataset
    assert f"ok, {IMAGES} images, {IMAGES} decoded" in out and report.exists()


# --- 2. one live trainer per output folder ----------------------------------------------------------

def _hold_lock(path: Path) -> subprocess.Popen:
    """Another process holding ``path``'s lock until killed."""
    code = ("import sys, time\nfrom vitpe.train.lock import exclusive_lock\n"
            "with exclusive_lock(sys.argv[1], 'test'):\n    print('held', flush=True)\n    time.sleep(600)\n")
    proc = subprocess.Popen([*PYTHON, "-c", code, str(path)], env=_env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _train_args(params: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "supervised", "--params", str(params), "--experiment", "deit_s", "--device", "cpu",
            "--out", str(out), *extra]


def test_a_second_trainer_on_a_live_output_folder_is_refused(tmp_path, capsys):
    make_image_folder(tmp_path / "data" / "imagenet")
    params = micro_params_file(tmp_path, tmp_path / "data", epochs=1)
    out = tmp_path / "out"
    state = out / STATE_DIR
    state.mkdir(parents=True)
    (state / "log.jsonl").write_text('{"step": 1, "loss": 2.3}\n')  # the live run's log, no state.pt yet
    holder = _hold_lock(state / LOCK_NAME)
    try:
        assert main(_train_args(params, out)) == 1
        msg = _one_error_line(capsys.readouterr().err)
        assert str(out) in msg and f"pid {holder.pid}" in msg and "in use" in msg
        assert (state / "log.jsonl").read_text() == '{"step": 1, "loss": 2.3}\n'  # untouched
        assert not (out / "model.safetensors").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # the kernel drops its lock: nothing stale to clean
        holder.wait()
    assert main(_train_args(params, out)) == 0
    assert (out / "model.safetensors").exists() and not (out / STATE_DIR).exists()  # lock gone with state/


def test_lock_is_released_and_removed_on_exit(tmp_path):
    path = tmp_path / "sub" / "x.lock"
    with exclusive_lock(path, "x"):
        assert path.read_text().strip() == str(os.getpid())
    assert not path.exists()
    with exclusive_lock(path, "x"), pytest.raises(Exception, match=rf"x is in use .*pid {os.getpid()}"):
        with exclusive_lock(path, "x"):
            pass


# --- 4. the thread count of a resumed CPU run ---------------------------------------------------------

@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_resume_on_another_thread_count_is_refused_naming_both(tmp_path, capsys, keep_threads):
    make_image_folder(tmp_path / "data" / "imagenet")
    params = micro_params_file(tmp_path, tmp_path / "data", epochs=1)
    out = tmp_path / "out"
    assert main(_train_args(params, out, "--threads", "1", "--max-steps", "2")) == 0
    assert "1 CPU thread(s)" in capsys.readouterr().err
    # the same command by hand on 2 threads (OMP_NUM_THREADS, as Snakemake sets it for a job)
    resumed = subprocess.run([*PYTHON, "-m", "vitpe", *_train_args(params, out)], env=_env(OMP_NUM_THREADS="2"),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 2, resumed.stderr
    msg = _one_error_line(resumed.stderr)
    assert "written by a run on 1 CPU thread(s), this one has 2: rerun with --threads 1" in msg
    assert main(_train_args(params, out, "--threads", "1")) == 0
    assert (out / "model.safetensors").exists()


# --- 3. a workflow killed hard recovers in one command ---------------------------------------------------

def test_workflow_run_is_refused_while_another_lives(tmp_path):
    with exclusive_lock(tmp_path / ".snakemake" / "vitpe-run.lock", "held by the test"):
        proc = run([*PYTHON, "-m", "vitpe.launch", "snakemake", "-n"], tmp_path, check=False)
    assert proc.returncode == 1, proc.stderr
    msg = _one_error_line(proc.stderr)
    assert f"pid {os.getpid()}" in msg and "vitpe.launch snakemake" in msg


def test_a_snakemake_lock_of_a_directly_started_live_run_is_kept(tmp_path):
    """Our run lock says nothing about a Snakemake started without the launcher: its lock is not stale."""
    fake = tmp_path / "bin" / "snakemake"
    fake.parent.mkdir()
    fake.write_text("import time\ntime.sleep(600)\n")
    direct = subprocess.Popen([sys.executable, str(fake)], cwd=tmp_path)
    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.output.lock").write_text("results/tables/main.tex\n")
    try:
        proc = run([*PYTHON, "-m", "vitpe.launch", "snakemake", "-n"], tmp_path, check=False)
    finally:
        direct.kill()
        direct.wait()
    assert proc.returncode == 1, proc.stderr
    assert f"held by a Snakemake started directly (pid {direct.pid})" in _one_error_line(proc.stderr)
    assert (locks / "0.output.lock").exists()


def _start_killable(cmd: list[str], cwd: Path) -> subprocess.Popen:
    """``cmd`` in a process group of its own (the venv first on PATH), for ``os.killpg``."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.Popen(cmd, cwd=cwd, env=_env(PATH=path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def test_workflow_killed_hard_recovers_through_the_launcher(workflow_copy):
    target = "results/checks/tiny/data.json"
    proc = _start_killable(["snakemake", "--cores", "1", target], workflow_copy)
    locks = workflow_copy / ".snakemake" / "locks"
    deadline = time.monotonic() + 240
    while not (locks.is_dir() and any(locks.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, "snakemake did not lock"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    blocked = run(["snakemake", "--cores", "1", target], workflow_copy, check=False)
    assert blocked.returncode != 0 and "LockException" in blocked.stdout + blocked.stderr  # the problem
    recovered = run([*PYTHON, "-m", "vitpe.launch", "snakemake", "--cores", "1", target], workflow_copy,
                    check=False, timeout=600)
    assert recovered.returncode == 0, recovered.stderr[-3000:]
    assert "removing the Snakemake lock left by a killed run" in recovered.stderr
    assert (workflow_copy / target).is_file()


# --- 5. the DAG: killed mid-training, recovered, the same metrics ----------------------------------------

def _without_timings(path: Path) -> object:
    """A metrics JSON's content; wall-clock timings (attacks: `seconds`, `*_seconds_*`) left out."""
    doc = json.loads(path.read_text())
    return {k: v for k, v in doc.items() if k != "seconds" and "_seconds_" not in k} if isinstance(doc, dict) else doc


@pytest.mark.slow
def test_dag_killed_mid_training_recovers_to_the_uninterrupted_metrics(micro_dag, tmp_path):
    """SIGKILL to the whole process group of a Snakemake run once a first training state exists; the
    launcher's rerun (stale lock removed, incomplete jobs rerun, the trainer resumed from its state)
    gives the metrics of the session's uninterrupted run of the same micro DAG."""
    cwd = copy_workflow(tmp_path, micro_params())
    command = [*PYTHON, "-m", "vitpe.launch", "snakemake", "--cores", "2", "results/tables/main.tex"]
    proc = _start_killable(command, cwd)
    deadline = time.monotonic() + 600
    while not list(cwd.glob(f"results/checkpoints/tiny/*/*/*/{STATE_DIR}/state.pt")):
        assert proc.poll() is None, "the workflow ended before a training state was written"
        assert time.monotonic() < deadline, "no training state within 10 minutes"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert any((cwd / ".snakemake" / "locks").iterdir())  # what used to need `snakemake --unlock`

    recovered = run(command, cwd, check=False, timeout=1800)
    assert recovered.returncode == 0, recovered.stderr[-3000:]
    resumed = [log for log in cwd.glob("results/logs/tiny/**/*.log") if "resuming from" in log.read_text()]
    assert resumed, "no training resumed from its state"
    metrics = sorted(p.relative_to(micro_dag) for p in (micro_dag / "results" / "metrics").rglob("*.json"))
    assert metrics and metrics == sorted(p.relative_to(cwd) for p in (cwd / "results" / "metrics").rglob("*.json"))
    for name in metrics:
        expected, found = micro_dag / name, cwd / name
        if "seconds" in expected.read_text():
            assert _without_timings(found) == _without_timings(expected), name
        else:
            assert found.read_bytes() == expected.read_bytes(), name


# --- 6. checkpoint files that are not what the command expects ----------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(params.yaml, model.safetensors) of a one-epoch micro run."""
    root = tmp_path_factory.mktemp("trained")
    make_image_folder(root / "data" / "imagenet")
    params = micro_params_file(root, root / "data", epochs=1)
    assert main(_train_args(params, root / "out")) == 0
    return params, root / "out" / "model.safetensors"


def _metadata_not_json(weights: Path, bad: Path) -> None:
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(weights)), str(bad), metadata={"vitpe": "{trained with: deit_s"})


@pytest.mark.parametrize("make, expected", [
    (_metadata_not_json, "the safetensors metadata 'vitpe' is not valid JSON"),
    (lambda weights, bad: torch.save({"w": torch.zeros(2)}, bad), "it is a torch.save (zip) checkpoint"),
    (lambda weights, bad: bad.write_bytes(pickle.dumps({"w": [0.0]})), "it is a pickle"),
    (lambda weights, bad: bad.write_bytes(weights.read_bytes()[:200]), "not a readable safetensors file"),
], ids=["metadata-not-json", "torch-save-zip", "bare-pickle", "truncated"])
def test_weights_that_are_not_vitpe_safetensors_get_one_line(trained, tmp_path, capsys, make, expected):
    params, weights = trained
    bad, out = tmp_path / "model.safetensors", tmp_path / "metrics.json"
    make(weights, bad)
    assert main(["eval", "classify", "--params", str(params), "--experiment", "deit_s", "--weights", str(bad),
                 "--out", str(out), "--device", "cpu"]) == 2
    msg = _one_error_line(capsys.readouterr().err)
    assert msg.startswith(f"error: {bad}: ") and expected in msg
    assert not out.exists()


@pytest.mark.parametrize("state, expected", [
    ([1, 2, 3], "holds a list; expected torchvision's AlexNet state dict"),
    ({"features.0.weight": torch.zeros(1)}, "no key features.0.bias; expected torchvision's AlexNet"),
], ids=["not-a-dict", "wrong-keys"])
def test_lpips_weights_that_are_not_alexnet_get_one_line(tmp_path, state, expected):
    from vitpe.attacks.metrics import Lpips
    from vitpe.errors import CheckpointError

    path = tmp_path / "alexnet.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=expected) as err:
        Lpips(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_an_attack_table_that_is_not_csv_gets_one_line(tmp_path):
    from vitpe.attacks.outputs import read_attack_table
    from vitpe.errors import DataError

    table = tmp_path / "images.csv"
    table.write_bytes(b"\xff\xfe\x00garbage\n\x00")
    with pytest.raises(DataError, match=f"{table}: not a readable CSV .*expected the per-image attack table"):
        read_attack_table(table)


# --- 7. output paths that cannot be written --------------------------------------------------------------

def test_a_file_where_an_output_folder_should_be_gets_one_line(trained, tmp_path, capsys):
    params, weights = trained
    blocker = tmp_path / "results"
    blocker.write_text("a file, not a folder\n")
    for argv in (_train_args(params, blocker / "deit_s"),  # the trainer's state/ folder
                 _train_args(params, blocker),
                 ["eval", "classify", "--params", str(params), "--experiment", "deit_s", "--weights", str(weights),
                  "--out", str(blocker / "metrics" / "deit_s.json"), "--device", "cpu"]):
        assert main(argv) == 2
        msg = _one_error_line(capsys.readouterr().err)
        assert "cannot create the output folder" in msg and f"{blocker} is a file, expected a folder" in msg
    assert blocker.read_text() == "a file, not a folder\n"


def test_outputs_written_together_are_all_written_or_none(trained, tmp_path, capsys):
    """A figure's .png and .pdf, an attack's table, reconstructions and metrics: when one cannot be written,
    none is left (a .png without its .pdf passed for a finished figure); an extension matplotlib cannot
    write is one line before anything is drawn (it was a traceback)."""
    import pandas as pd

    from vitpe.attacks.outputs import write_outputs
    from vitpe.errors import OutputError

    log = trained[1].parent / "log.jsonl"
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder\n")
    png = tmp_path / "figures" / "curves.png"
    assert main(["report", "curves", str(log), "--out", str(png), str(blocker / "curves.pdf")]) == 2
    assert "cannot create the output folder" in _one_error_line(capsys.readouterr().err)
    assert not png.exists()
    assert main(["report", "curves", str(log), "--out", str(png), str(tmp_path / "curves.txt")]) == 2
    assert _one_error_line(capsys.readouterr().err).startswith(
        f"error: {tmp_path / 'curves.txt'}: cannot save a figure as .txt (expected one of: ")
    assert not png.exists() and not (tmp_path / "curves.txt").exists()
    table, recon = tmp_path / "attacks" / "images.csv", tmp_path / "attacks" / "recon.safetensors"
    with pytest.raises(OutputError, match="is a file, expected a folder"):
        write_outputs(pd.DataFrame({"psnr": [1.0]}), {"x": torch.zeros(1)}, {}, {"n": 1},
                      blocker / "attacks.json", table, recon)
    assert not table.exists() and not recon.exists()
    # `vitpe attack run` names a blocked output folder before it loads the model (the attacks take hours)
    assert main(["attack", "run", "--experiment", "deit_s", "--kind", "supervised", "--weights",
                 str(tmp_path / "not_trained.safetensors"), "--out", str(blocker / "attacks.json"),
                 "--table", str(table), "--recon", str(recon)]) == 2
    assert "is a file, expected a folder" in _one_error_line(capsys.readouterr().err)


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(trained, tmp_path, capsys, monkeypatch):
    """ENOSPC halfway through writing state.pt: one line, the previous state intact, no temporary left,
    no weights published; the rerun (space freed) resumes from the intact state."""
    from vitpe.train import checkpoint

    params, _ = trained
    out = tmp_path / "out"
    assert main(_train_args(params, out, "--max-steps", "2")) == 0  # checkpoint_every 4: a state at step 2
    state = out / STATE_DIR / "state.pt"
    before, truncated = state.read_bytes(), (out / "model.safetensors").read_bytes()  # --max-steps publishes
    real_save = torch.save

    def disk_full(obj, path):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    capsys.readouterr()
    assert main(_train_args(params, out)) == 2
    err = capsys.readouterr().err  # the progress lines, then the error
    assert [line for line in err.splitlines() if "error" in line] == [
        f"error: {state}: write failed (No space left on device); the previous file is kept"]
    assert state.read_bytes() == before and not list(state.parent.glob(".state.pt.*"))
    assert (out / "model.safetensors").read_bytes() == truncated  # nothing newer published
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert main(_train_args(params, out)) == 0
    assert "resuming from" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() != truncated
