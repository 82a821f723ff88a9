"""Interruptions through the CLI: SIGTERM pre-emption (exit 124, resume) and divergence (exit 3);
plus one training step of the paper-scale ViT-S/16 recipe on CPU."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from timm.loss import SoftTargetCrossEntropy

from conftest import ROOT, log_records, make_image_folder, micro_params_file
from vitpe.cli import main
from vitpe.config import apply_overrides, load_params
from vitpe.runs import supervised_run
from vitpe.train.supervised import train_supervised


def _vitpe(*args: str) -> list[str]:
    return [sys.executable, "-m", "vitpe", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


@pytest.mark.slow
def test_sigterm_checkpoints_exits_124_and_resumes_to_identical_weights(tmp_path):
    make_image_folder(tmp_path / "data" / "imagenet")
    params = micro_params_file(tmp_path, tmp_path / "data", epochs=20, checkpoint_every=1000)  # 100 steps
    train_args = ["train", "supervised", "--params", str(params), "--experiment", "deit_s", "--device", "cpu"]
    out = tmp_path / "interrupted"

    proc = subprocess.Popen(_vitpe(*train_args, "--out", str(out)), env=_env(), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "state" / "log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.exists() and len(log.read_text().splitlines()) >= 2):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 124, stderr
    assert "preempted: received SIGTERM" in stderr
    state = torch.load(out / "state" / "state.pt", weights_only=True)
    assert 2 <= state["step"] < 100  # checkpointed at the step boundary after the signal
    assert not (out / "model.safetensors").exists()

    resumed = subprocess.run(_vitpe(*train_args, "--out", str(out)), env=_env(), cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {out / 'state' / 'state.pt'} at step {state['step']}/100" in resumed.stderr

    reference = tmp_path / "reference"
    train_supervised(supervised_run(load_params(params), "deit_s"), reference, device="cpu")
    assert (out / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()
    assert log_records(out) == log_records(reference)
    metrics = []
    for run_dir in (out, reference):
        assert main(["eval", "classify", "--params", str(params), "--experiment", "deit_s", "--device", "cpu",
                     "--weights", str(run_dir / "model.safetensors"), "--out", str(run_dir / "m.json")]) == 0
        metrics.append(json.loads((run_dir / "m.json").read_text()))
    assert metrics[0] == metrics[1] and metrics[0]["num_images"] == 10


@pytest.mark.slow
def test_two_process_gloo_run_resumes_to_identical_weights(tmp_path):
    make_image_folder(tmp_path / "data" / "imagenet")
    params = micro_params_file(tmp_path, tmp_path / "data", epochs=2)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
              "-m", "vitpe", "train", "supervised", "--params", str(params), "--experiment", "deit_s",
              "--device", "cpu"]

    def torchrun(*args: str) -> None:
        proc = subprocess.run([*launch, *args], env=_env(), cwd=tmp_path, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]

    torchrun("--out", "whole")
    torchrun("--out", "split", "--max-steps", "3")
    state = torch.load(tmp_path / "split" / "state" / "state.pt", weights_only=True)
    assert state["step"] == 3 and len(state["rng"]) == 2  # one RNG snapshot per rank
    torchrun("--out", "split")
    assert (tmp_path / "whole/model.safetensors").read_bytes() == (tmp_path / "split/model.safetensors").read_bytes()
    records = log_records(tmp_path / "whole")
    steps = [r for r in records if "loss" in r]
    assert records == log_records(tmp_path / "split") and len(steps) == 10  # 20 images / (2 x 2) x 2 epochs


def test_nan_loss_exits_3_keeps_last_good_state_and_writes_no_weights(tmp_path, monkeypatch, capsys):
    make_image_folder(tmp_path / "data" / "imagenet")
    params = micro_params_file(tmp_path, tmp_path / "data", checkpoint_every=2)
    calls = {"n": 0}
    forward = SoftTargetCrossEntropy.forward

    def poisoned(self, x, target):  # the 4th optimizer step's loss becomes NaN
        calls["n"] += 1
        loss = forward(self, x, target)
        return loss * float("nan") if calls["n"] == 4 else loss

    monkeypatch.setattr(SoftTargetCrossEntropy, "forward", poisoned)
    out = tmp_path / "run"
    code = main(["train", "supervised", "--params", str(params), "--experiment", "deit_s",
                 "--out", str(out), "--device", "cpu"])
    assert code == 3
    err = capsys.readouterr().err
    assert "error: loss is nan at step 4 (epoch 0)" in err and "(step 2) kept" in err
    assert not (out / "model.safetensors").exists()
    assert torch.load(out / "state" / "state.pt", weights_only=True)["step"] == 2
    assert [json.loads(line)["step"] for line in (out / "state" / "log.jsonl").read_text().splitlines()] == [1, 2, 3]


@pytest.mark.paper_size
def test_paper_scale_vit_s16_recipe_runs_one_step_on_cpu(tmp_path):
    data = make_image_folder(tmp_path / "data", train_per_class=2, val_per_class=1, size=224, num_classes=2)
    run = supervised_run(apply_overrides(load_params(ROOT / "params.yaml"), ["scale=paper"]), "deit_s")
    run = dataclasses.replace(run, num_classes=2, train_dir=data / "train", val_dir=data / "val",
                              recipe=dataclasses.replace(run.recipe, batch_size=2),
                              runtime=dataclasses.replace(run.runtime, num_workers=0))
    assert run.model.img_size == 224 and run.model.depth == 12 and run.recipe.repeated_aug == 3
    out = tmp_path / "run"
    assert train_supervised(run, out, device="cpu", max_steps=1) == out / "state" / "state.pt"
    (record,) = [json.loads(line) for line in (out / "state" / "log.jsonl").read_text().splitlines()]
    assert record["step"] == 1 and record["lr"] == pytest.approx(5e-7 * 2 / 512)  # warm-up start
    assert math.isfinite(record["loss"]) and 0.2 < record["loss"] < 2.0  # ~ln 2 for 2 classes
    state = torch.load(out / "state" / "state.pt", weights_only=True)
    assert state["model"]["pos_embed"].shape == (1, 197, 384)
    assert len(state["model"]) == 152  # ViT-S/16: 12 blocks x 12 tensors + 8 others
