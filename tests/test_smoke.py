"""The smoke scale end to end: the paper recipes, cut to a few steps, through the real Snakemake DAG.

Every rule runs on the mini real-layout set at the paper's model and input sizes (ViT-S/16 and ViT-B/16
at 224 px, MAE+ 4 x 112 crops, UperNet 512, ViTDet 1024). Supervised training runs under
``torchrun --nproc-per-node 2`` (gloo) and is pre-empted with SIGTERM once it has checkpointed; the
rerun resumes it. DVC then records the run with this scale's stages and reruns one.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import BIN, ROOT, copy_workflow, run

SCALE = "smoke"
# One model of each kind keeps the bill near 12 minutes on 2 cores: DeiT-S and MJP (shuffle, robustness
# and probe evaluations, optimisation attacks), their APRIL variants (closed forms), MAE (asymmetric
# encoder), AdPE absolute-coordinate (MAE+ 4 crops and an adversary) and AdPE relative-coordinate
# (interpolated iRPE), each pretrained, fine-tuned and linear-probed; one encoder transferred to both tasks.
EXPERIMENTS = {
    "experiments": {"supervised": ["deit_s", "mjp"],
                    "pretrain": ["mae", "adpe_abs_coordinate", "adpe_rel_coordinate"],
                    "transfer": ["adpe_abs_coordinate"]},
    "attacks": {"models": ["deit_s", "mjp"], "finetuned": ["mae"],
                "compare": [["deit_s", "mjp"], ["deit_s_april", "mjp_april"]]},
}
# the two transfer jobs peak at 9.5 and 12.8 GB: never both at once next to a training job (the option
# takes several values: it goes after the target)
MEMORY = ["--resources", "mem_mb=20000"]


@pytest.fixture
def smoke_workflow(tmp_path: Path) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["scale"] = SCALE
    for section, values in EXPERIMENTS.items():
        params[section].update(values)
    # 2 masks per shuffle ratio still average and spread over masks; the default 10 cost each 224-px
    # evaluation suite 6 minutes on a slow 2-core CPU (the micro DAG runs the default)
    params["evaluation"]["shuffle_masks"] = 2
    return copy_workflow(tmp_path, params)


def _metrics(cwd: Path, exp: str, name: str) -> dict:
    return json.loads((cwd / f"results/metrics/{SCALE}/seed0/{exp}/{name}.json").read_text())


def _preempt_after_first_checkpoint(cwd: Path, snakemake: subprocess.Popen, exp: str) -> None:
    """SIGTERM the launcher of ``exp``'s training, as SLURM does at its time limit, once state.pt exists."""
    state = cwd / f"results/checkpoints/{SCALE}/seed0/supervised/{exp}/state/state.pt"
    deadline = time.monotonic() + 600
    while not state.exists():
        assert snakemake.poll() is None, "snakemake ended before the training job checkpointed"
        assert time.monotonic() < deadline, "no training checkpoint within 10 minutes"
        time.sleep(0.2)
    launchers = [p for p in psutil.Process(snakemake.pid).children(recursive=True)
                 if "vitpe.launch" in " ".join(p.cmdline())]
    assert len(launchers) == 1, [p.cmdline() for p in launchers]
    command = " ".join(launchers[0].cmdline())
    assert "torchrun --standalone --nproc-per-node=2" in command and f"--experiment {exp}" in command
    launchers[0].send_signal(signal.SIGTERM)


@pytest.mark.slow
@pytest.mark.paper_size
def test_smoke_dag_runs_the_paper_recipes_end_to_end(smoke_workflow):
    cwd = smoke_workflow
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    weights = cwd / f"results/checkpoints/{SCALE}/seed0/supervised/deit_s/model.safetensors"
    train_log = cwd / f"results/logs/{SCALE}/seed0/supervised/deit_s/train.log"

    # 1. the 2-process training job is pre-empted after a checkpoint: it saves, exits 124, publishes nothing
    snakemake = subprocess.Popen(["snakemake", str(weights.relative_to(cwd)), "--cores", "2", *MEMORY], cwd=cwd,
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _preempt_after_first_checkpoint(cwd, snakemake, "deit_s")
        out, _ = snakemake.communicate(timeout=600)
    finally:
        if snakemake.poll() is None:
            snakemake.kill()
    assert snakemake.returncode != 0 and "exit status 124" in out, out[-3000:]
    assert "rerun the command to resume" in train_log.read_text()
    assert not weights.exists() and (weights.parent / "state/state.pt").exists()

    # 2. the whole DAG: the pre-empted job resumes where it stopped, every other rule runs once
    run(["snakemake", "results/tables/main.tex", "--cores", "2", *MEMORY], cwd, timeout=2400)
    log = train_log.read_text()
    assert "resuming from" in log and "on 2 process(es)" not in log, log[-2000:]
    records = [json.loads(line) for line in (weights.parent / "log.jsonl").read_text().splitlines()]
    curve = [r for r in records if "validation" not in r]
    assert [r["step"] for r in curve] == [1, 2, 3, 4]  # 2 epochs x 2 steps: none lost, none repeated
    assert [r["epoch"] for r in curve] == [0, 0, 1, 1]
    assert [r["epoch"] for r in records if "validation" in r] == [0, 1]  # each epoch validated once

    for exp in ("deit_s", "mjp"):
        classify = _metrics(cwd, exp, "classify")
        assert 0.0 <= classify["top1"] <= classify["top5"] <= 100.0
        robustness = _metrics(cwd, exp, "robustness")
        assert robustness["mce"] > 0 and robustness["c_missing_extra_corruptions"] == ""
        assert 0.0 <= robustness["a_top1"] <= 100.0 and 0.0 <= robustness["o_aupr"] <= 100.0
        assert robustness["a_num_classes"] == robustness["o_num_classes"] == 3  # from the data, not 200
        assert "shuffled_top1_r0.90" in _metrics(cwd, exp, "shuffle")
        assert _metrics(cwd, exp, "attacks")["scale"] == SCALE
    for exp in ("mae", "adpe_abs_coordinate", "adpe_rel_coordinate"):
        assert _metrics(cwd, exp, "pretext")["val_loss"] > 0
        for protocol in ("finetune", "linprobe"):
            assert 0.0 <= _metrics(cwd, exp, protocol)["top1"] <= 100.0
    ade, coco = _metrics(cwd, "adpe_abs_coordinate", "ade20k"), _metrics(cwd, "adpe_abs_coordinate", "coco")
    assert 0.0 <= ade["ade20k_miou"] <= 100.0 and ade["ade20k_iters"] == 2
    assert 0.0 <= coco["coco_ap_box"] <= 1.0 and coco["coco_iters"] == 2
    paired = _metrics(cwd, "attacks", "paired")
    for pair in ("deit_s_vs_mjp", "deit_s_april_vs_mjp_april"):  # two images per model: n = 2 per comparison
        assert [v for k, v in paired.items() if k.startswith(pair) and k.endswith("_psnr_diff_n")] and \
            all(v == 2 for k, v in paired.items() if k.startswith(pair) and k.endswith("_psnr_diff_n"))
    table = (cwd / "results/tables/main.tex").read_text()
    assert "DeiT-S & smoke" in table and "AdPE" in table
    again = run(["snakemake", "-n", "--cores", "2", "results/tables/main.tex"], cwd)
    assert "Nothing to be done" in again.stdout + again.stderr

    # 3. DVC at this scale: this scale's stages (`make dvc-yaml`) record the Snakemake run as after
    # `make run` (`dvc commit`; `dvc repro` with no lock would rerun every job): every stage's deps and
    # outs exist at this scale, and a stage's command reruns its job
    run(["git", "init", "-q"], cwd)
    run(["dvc", "init", "-q"], cwd)
    run([sys.executable, "-m", "vitpe.dvc_stages"], cwd)
    stages = yaml.safe_load((cwd / "dvc.yaml").read_text())["stages"]
    assert {"train_supervised-mjp-seed0", "transfer_coco-adpe_abs_coordinate-seed0", "table_main"} <= set(stages)
    assert "/tiny/" not in json.dumps(stages)
    run(["dvc", "commit", "-f", "-q"], cwd, timeout=600)
    assert not json.loads(run(["dvc", "status", "--json"], cwd).stdout or "{}")
    repro = run(["dvc", "repro", "--force", "--single-item", "table_main"], cwd)
    assert "Running stage 'table_main'" in repro.stdout and "1 of 1 steps (100%) done" in repro.stdout + repro.stderr
    assert "DeiT-S & smoke" in (cwd / "results/tables/main.tex").read_text()
    assert not json.loads(run(["dvc", "status", "--json"], cwd).stdout or "{}")
