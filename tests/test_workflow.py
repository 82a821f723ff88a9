"""The real Snakemake DAG: SLURM resources and launch commands (dry runs, a stub sbatch), a micro
end-to-end run, and DVC on top of it."""
from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

import pytest
import yaml

from conftest import BIN, ROOT, copy_micro_dag, run

SLURM_ENV = {"VITPE_SLURM_ACCOUNT": "proj123", "VITPE_SLURM_PARTITION": "gpu"}


def _job_block(dry_run: str, rule: str, output: str) -> str:
    """The dry-run block of the ``rule`` job that writes ``output``."""
    blocks = [m.group(1) for m in re.finditer(rf"rule {rule}:\n(.*?)(?:\n\n|\Z)", dry_run, re.S)]
    matching = [b for b in blocks if output in b]
    assert matching, f"no {rule} job writing {output} in the dry run:\n{dry_run[-2000:]}"
    return matching[0]


def _resources(block: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=([^,\s]+)", re.search(r"resources: (.*)", block).group(1)))


def _slurm_dry_run(cwd, monkeypatch, *args: str, target: str = "results/tables/main.tex") -> str:
    for key, value in SLURM_ENV.items():
        monkeypatch.setenv(key, value)
    return run(["snakemake", "-n", "-p", "--cores", "all", "--profile", "slurm", *args, "--", target], cwd).stdout


def _edit_params(cwd, edit) -> None:
    """Apply ``edit`` (a function changing the dict in place) to the workflow copy's params.yaml."""
    params = yaml.safe_load((cwd / "params.yaml").read_text())
    edit(params)
    (cwd / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_slurm_profile_dry_run_requests_gpus(workflow_copy, monkeypatch):
    _edit_params(workflow_copy, lambda params: params["experiments"]["supervised"].append("deit_s_april"))
    dry = _slurm_dry_run(workflow_copy, monkeypatch)
    block = _job_block(dry, "train_supervised", "results/checkpoints/paper/seed0/supervised/deit_s/model.safetensors")
    resources = _resources(block)
    # the profile switches to the paper scale; every GPU request is explicit, on one node
    assert resources["gpu"] == "8" and resources["cpus_per_gpu"] == "8" and resources["tasks_per_gpu"] == "0"
    assert resources["nodes"] == "1" and resources["mem_mb"] == "256000"
    assert resources["slurm_account"] == "proj123" and resources["slurm_partition"] == "gpu"
    assert resources["slurm_extra"] == "--signal=TERM@600"  # the early warning the trainer checkpoints on
    # runtime from DeiT-S's own recipe: 15 + 1.5 x 300 epochs x 1,281,167 images / (1000/s x 8 GPUs) / 60
    assert resources["runtime"] == "1217"
    command = re.search(r"exec .*train supervised.*--experiment deit_s .*", dry).group(0)
    assert command.startswith("exec python -m vitpe.launch torchrun --standalone --nproc-per-node=8 -m vitpe")
    assert "--set 'scale=\"paper\"'" in command  # the job sees the profile's override
    # the 2-epoch APRIL variant: one GPU for 15 + 1.5 x 2 x 1,281,167 / 1000 / 60 min, one process
    april = _resources(_job_block(dry, "train_supervised",
                                  "results/checkpoints/paper/seed0/supervised/deit_s_april/model.safetensors"))
    assert april["gpu"] == "1" and april["runtime"] == "80" and april["mem_mb"] == "32000"
    assert re.search(r"exec vitpe train supervised .*--experiment deit_s_april ", dry)
    # the other training stages follow their recipes too (numbers worked through in common.smk)
    runtimes = {(rule, out): _resources(_job_block(dry, rule, out))["runtime"] for rule, out in [
        ("train_pretrain", "results/checkpoints/paper/seed0/pretrain/mae/model.safetensors"),
        ("train_encoder_protocol", "results/checkpoints/paper/seed0/finetune/mae/model.safetensors"),
        ("train_encoder_protocol", "results/checkpoints/paper/seed0/linprobe/mae/model.safetensors"),
        ("transfer_ade20k", "results/metrics/paper/seed0/mae/ade20k.json"),
    ]}
    assert list(runtimes.values()) == ["4320", "683", "256", "1015"]  # MAE: 5353 min, capped at 3 days


def test_slurm_transfer_runtime_follows_its_iterations(workflow_copy, monkeypatch):
    _edit_params(workflow_copy, lambda params: params["scales"]["paper"]["transfer"]["ade20k"].update(iters=16000))
    dry = _slurm_dry_run(workflow_copy, monkeypatch, target="results/metrics/paper/seed0/mae/ade20k.json")
    block = _job_block(dry, "transfer_ade20k", "results/metrics/paper/seed0/mae/ade20k.json")
    assert _resources(block)["runtime"] == "115"  # 15 + 1.5 x 16,000 x 16 / (8/s x 8 GPUs) / 60 (160k: 1015)


def test_slurm_set_resources_changes_the_processes_launched(workflow_copy, monkeypatch):
    dry = _slurm_dry_run(workflow_copy, monkeypatch, "--set-resources", "train_supervised:gpu=4",
                         target="results/checkpoints/paper/seed0/supervised/deit_s/model.safetensors")
    block = _job_block(dry, "train_supervised", "results/checkpoints/paper/seed0/supervised/deit_s/model.safetensors")
    assert _resources(block)["gpu"] == "4"
    assert "exec python -m vitpe.launch torchrun --standalone --nproc-per-node=4 -m vitpe train supervised" in block


def test_smoke_scale_launches_supervised_training_as_two_processes(workflow_copy):
    dry = run(["snakemake", "-n", "-p", "--cores", "2", "--config", "scale=smoke", "--",
               "results/checkpoints/smoke/seed0/supervised/deit_s/model.safetensors",
               "results/checkpoints/smoke/seed0/pretrain/mae/model.safetensors"], workflow_copy).stdout
    supervised = _job_block(dry, "train_supervised", "results/checkpoints/smoke/seed0/supervised/deit_s/model.safetensors")
    assert _resources(supervised)["gpu"] == "0" and _resources(supervised)["procs"] == "2"
    assert "exec python -m vitpe.launch torchrun --standalone --nproc-per-node=2 -m vitpe train supervised" \
        in supervised
    pretrain = _job_block(dry, "train_pretrain", "results/checkpoints/smoke/seed0/pretrain/mae/model.safetensors")
    assert "exec vitpe train pretrain" in pretrain and "torchrun" not in pretrain


def test_smoke_scale_on_the_cluster_runs_on_gpus(workflow_copy, monkeypatch):
    """Under the slurm profile the smoke check exercises CUDA, NCCL and torchrun, one hour per job."""
    for key, value in SLURM_ENV.items():
        monkeypatch.setenv(key, value)
    dry = run(["snakemake", "-n", "-p", "--cores", "all", "--profile", "slurm", "--config", "scale=smoke", "--",
               "results/metrics/smoke/seed0/deit_s/classify.json",
               "results/checkpoints/smoke/seed0/pretrain/mae/model.safetensors"], workflow_copy).stdout
    supervised = _job_block(dry, "train_supervised", "results/checkpoints/smoke/seed0/supervised/deit_s/model.safetensors")
    assert _resources(supervised)["gpu"] == "2" and _resources(supervised)["runtime"] == "60"
    assert "exec python -m vitpe.launch torchrun --standalone --nproc-per-node=2 -m vitpe train supervised" \
        in supervised and "--set 'scale=\"smoke\"'" in supervised
    for rule, output in (("train_pretrain", "results/checkpoints/smoke/seed0/pretrain/mae/model.safetensors"),
                         ("eval_supervised", "results/metrics/smoke/seed0/deit_s/classify.json")):
        block = _job_block(dry, rule, output)
        assert _resources(block)["gpu"] == "1" and _resources(block)["nodes"] == "1", block
        assert "exec vitpe" in block and "torchrun" not in block


@pytest.mark.parametrize("missing", ["VITPE_SLURM_ACCOUNT", "VITPE_SLURM_PARTITION"])
def test_slurm_profile_without_account_or_partition_stops_before_submitting(workflow_copy, tmp_path, monkeypatch,
                                                                            missing):
    log = _stub_slurm(tmp_path, monkeypatch)
    monkeypatch.delenv(missing)
    proc = run(["snakemake", "--cores", "all", "--profile", "slurm",
                "results/checkpoints/paper/seed0/supervised/deit_s/model.safetensors"], workflow_copy, check=False,
               timeout=120)
    assert proc.returncode != 0
    assert (f"error: default resource slurm_{missing.split('_')[-1].lower()} (slurm/config.yaml) reads "
            f"${missing}, which is not set" in proc.stderr), proc.stderr[-2000:]
    assert "sbatch" not in (log.read_text() if log.exists() else "")  # nothing was submitted


@pytest.mark.slow
def test_micro_dag_end_to_end_then_nothing_to_do(micro_dag, tmp_path):
    cwd = micro_dag  # the session's run of the whole micro DAG (conftest): only read here
    metrics = json.loads((cwd / "results/metrics/tiny/seed0/deit_s/classify.json").read_text())
    assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 100.0
    table = (cwd / "results/tables/main.tex").read_text()
    assert "\\toprule" in table and "DeiT-S" in table
    # every run value is the mean ± std of the per-seed metrics (micro: seeds 0 and 1)
    for exp, kind, key in (("deit_s", "classify", "top1"), ("mjp", "robustness", "mce"), ("mae", "finetune", "top1")):
        values = [json.loads((cwd / f"results/metrics/tiny/seed{seed}/{exp}/{kind}.json").read_text())[key]
                  for seed in (0, 1)]
        assert f"{statistics.mean(values):.1f} $\\pm$ {statistics.stdev(values):.1f}" in table, (exp, key, values)
    assert "Paper claims, tested on this run" in table and "tab:claims" in table
    assert "79.9" in table  # the sourced paper value, shown without a delta at the tiny scale
    mjp = {name: json.loads((cwd / f"results/metrics/tiny/seed0/mjp/{name}.json").read_text())
           for name in ("shuffle", "robustness", "pe_probe")}
    assert 0.0 <= mjp["shuffle"]["consistency_agreement"] <= 1.0 and "shuffled_top1_r0.90" in mjp["shuffle"]
    assert mjp["robustness"]["mce"] > 0 and "o_aupr" in mjp["robustness"] and mjp["pe_probe"]["status"] == "ok"
    assert "MJP" in table
    for exp in ("mae", "adpe_abs_coordinate", "adpe_rel_coordinate"):  # the micro AdPE experiments
        finetune = json.loads((cwd / f"results/metrics/tiny/seed0/{exp}/finetune.json").read_text())
        pretext = json.loads((cwd / f"results/metrics/tiny/seed0/{exp}/pretext.json").read_text())
        assert 0.0 <= finetune["top1"] <= 100.0 and pretext["val_loss"] > 0
        assert (cwd / f"results/checkpoints/tiny/seed0/pretrain/{exp}/encoder.safetensors").is_file()
    assert "AdPE study" in table
    for name in ("pretrain_curves", "adpe_delta_norms", "adpe_accuracy"):
        assert (cwd / f"results/figures/tiny/{name}.pdf").stat().st_size > 1000, name
    for name in ("training_curves", "shuffle_accuracy", "pe_spectra", "pe_similarity", "mjp_illustration"):
        assert (cwd / f"results/figures/tiny/{name}.pdf").stat().st_size > 1000, name
    again = run(["snakemake", "-n", "--cores", "2", "results/tables/main.tex"], cwd)
    assert "Nothing to be done" in again.stdout + again.stderr
    report = tmp_path / "report.html"  # outside the shared run
    run(["snakemake", "--report", str(report), "results/tables/main.tex"], cwd, timeout=300)
    html = report.read_text(errors="replace")  # every figure and the tables, grouped by study
    figures = sorted(p.name for p in (cwd / "results/figures/tiny").glob("*.png"))
    assert len(figures) >= 10 and all(name in html for name in figures + ["main.html"]), figures
    assert all(f'"{category}"' in html for category in ("MJP", "AdPE", "Privacy", "Tables"))
    assert "<td>DeiT-S</td>" in (cwd / "results/tables/main.html").read_text()


def _dvc_status(cwd) -> dict:
    return json.loads(run(["dvc", "status", "--json"], cwd).stdout or "{}")


@pytest.mark.slow
def test_dvc_repro_and_metrics_diff(micro_dag, tmp_path):
    # a copy of the session's micro run (this test changes it), with the micro params' stages
    cwd = copy_micro_dag(micro_dag, tmp_path / "workflow")
    run(["git", "init", "-q"], cwd)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "init"], cwd)
    run(["dvc", "init", "-q"], cwd)
    run([sys.executable, "-m", "vitpe.dvc_stages"], cwd)
    run(["dvc", "commit", "-f", "-q"], cwd)  # records the finished Snakemake run: nothing retrains
    assert _dvc_status(cwd) == {}
    dag = run(["dvc", "dag", "--dot"], cwd).stdout  # the study, job by job
    assert '"train_supervised-mjp-seed0" -> "eval_supervised-mjp-seed0"' in dag
    assert '"train_pretrain-mae-seed1" -> "train_encoder_protocol-mae-finetune-seed1"' in dag
    run(["git", "add", "-A"], cwd)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "baseline"], cwd)
    # a fresh checkout: the cached outputs restored with new file times, no Snakemake records. With the
    # checksum threshold at 0 (paper-size checkpoints are never checksummed) Snakemake alone would
    # rerun everything downstream of a checkpoint; the launcher retrains and re-evaluates nothing
    metrics = {p: p.read_bytes() for p in (cwd / "results/metrics").rglob("*.json")}
    for out in ("results/checkpoints", "results/attacks"):
        shutil.rmtree(cwd / out)
    shutil.rmtree(cwd / ".snakemake" / "metadata")
    run(["dvc", "checkout", "-q"], cwd)
    args = ["--cores", "1", "--max-checksum-file-size", "0", "results/tables/main.tex"]
    dry = run(["snakemake", "-n", *args], cwd).stdout
    assert "rule eval_supervised" in dry  # what file times alone would do: re-evaluate every restored model
    launched = run([sys.executable, "-m", "vitpe.launch", "snakemake", *args], cwd)
    assert "dvc status: the outputs are the ones dvc.lock records" in launched.stderr
    assert "Nothing to be done" in launched.stdout + launched.stderr
    assert {p: p.read_bytes() for p in (cwd / "results/metrics").rglob("*.json")} == metrics
    assert "Nothing to be done" in run(["snakemake", "-n", *args], cwd).stdout
    # a real change (MJP's PE table starts as DeiT's: the micro run ends before MJP's jigsaw starts):
    # dvc status names MJP's stages only, dvc repro reruns them and what reads them, and dvc metrics
    # diff shows only MJP's rows
    mjp = cwd / "results/checkpoints/tiny/seed0/supervised/mjp/model.safetensors"
    deit = cwd / "results/checkpoints/tiny/seed0/supervised/deit_s/model.safetensors"
    before = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in (mjp, deit)}
    _edit_params(cwd, lambda params: params["supervised"]["mjp"].update(unk={"init": "trunc_normal"}))
    stale = set(_dvc_status(cwd))
    assert {"train_supervised-mjp-seed0", "train_supervised-mjp-seed1", "eval_supervised-mjp-seed0"} <= stale
    assert all("-mjp-" in name for name in stale), stale
    run(["dvc", "repro"], cwd, timeout=1800)
    assert (deit.read_bytes(), deit.stat().st_mtime_ns) == before[deit]  # not retrained
    assert mjp.read_bytes() != before[mjp][0]
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], cwd).stdout)
    # DVC compares only the curated per-model numbers (vitpe.report.headline): no timings, no noise
    assert list(diff) == ["results/metrics/tiny/headline.json"]
    changed = diff["results/metrics/tiny/headline.json"]
    assert changed and all(".mjp." in key for key in changed), sorted(changed)
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], cwd).stdout)
    (headline,) = [data["data"]["results/metrics/tiny/headline.json"]["data"] for data in shown.values()]
    means = [key for key in _flat(headline) if not key.endswith("_std")]  # each mean has its std over seeds
    assert len(means) <= 150 and "supervised.deit_s.top1_std" in _flat(headline)
    assert not [key for key in _flat(headline) if "seconds" in key]
    # switched back: the run cache restores MJP's outputs, nothing trains
    _edit_params(cwd, lambda params: params["supervised"]["mjp"].pop("unk"))
    back = run(["dvc", "repro"], cwd, timeout=900)
    assert "Stage 'train_supervised-mjp-seed0' is cached - skipping run" in back.stdout, back.stdout[-3000:]
    assert "Running stage" not in back.stdout, back.stdout[-3000:]
    assert mjp.read_bytes() == before[mjp][0] and _dvc_status(cwd) == {}
    assert not json.loads(run(["dvc", "metrics", "diff", "--json"], cwd).stdout or "{}")
    # the curve data is in git: both revisions render, one colour per run (the CSV's model column)
    shutil.copytree(ROOT / ".dvc/plots", cwd / ".dvc/plots", dirs_exist_ok=True)
    _edit_params(cwd, lambda params: params["supervised"]["mjp"].update(unk={"init": "trunc_normal"}))
    run(["dvc", "repro"], cwd, timeout=900)  # from the run cache
    plots = json.loads(run(["dvc", "plots", "diff", "HEAD", "--json", "--split"], cwd).stdout)
    assert not plots.get("errors"), plots.get("errors")
    loss = plots["data"]["Supervised training loss"][0]
    assert set(loss["revisions"]) == {"HEAD", "workspace"}


def _flat(tree: dict, prefix: str = "") -> list[str]:
    """The dotted keys of a nested metrics dict (DVC's own naming)."""
    keys = []
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else key
        keys += _flat(value, name) if isinstance(value, dict) else [name]
    return keys


def test_dvc_lock_records_this_tree():
    """dvc.lock records every stage whose files this checkout holds, and every recorded stage has this
    tree's command, sources (Snakefile, workflow/, src/vitpe) and params and the committed results as
    they are: only cached files (checkpoints, attack outputs) and the git-ignored figures may be absent.
    A change that leaves the results as they are, or whose stage was rerun on the committed metrics (the
    table), is recorded with `make dvc-lock`; one that moves a trained number, by a rerun."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    locked = set(yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"])
    files = {name: [*stage["deps"], *(next(iter(out)) if isinstance(out, dict) else out for out in stage["outs"])]
             for name, stage in stages.items()}
    present = {name for name, paths in files.items() if all((ROOT / path).exists() for path in paths)}
    assert present <= locked, f"stages not recorded in dvc.lock: {sorted(present - locked)}: run `make dvc-lock`"
    assert {"headline_metrics", "train_supervised-mjp-seed0"} <= locked
    absent = {"deleted", "not in cache"}
    status = json.loads(run([str(BIN / "dvc"), "status", "--json"], ROOT).stdout or "{}")
    stale = {name: entries for name, entries in status.items() if name in locked and not all(
        isinstance(entry, dict) and set(entry) <= {"changed outs", "changed deps"}
        and all(isinstance(state, str) and state in absent for change in entry.values() for state in change.values())
        for entry in entries)}
    assert not stale, f"dvc.lock is not this tree's ({stale}): run `make dvc-lock`"


STUB = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "{log}"
case "$(basename "$0")" in
  sbatch) echo "4242" ;;
  sacctmgr) echo "proj123" ;;
  sacct) echo "4242|RUNNING|0:0" ;;
  squeue) echo "4242 RUNNING" ;;
  scontrol) echo "MinJobAge=300" ;;
esac
"""


def _stub_slurm(tmp_path, monkeypatch):
    """SLURM binaries that log their argv; the account and partition variables set. Returns the log."""
    stubs, log = tmp_path / "stubs", tmp_path / "slurm_calls.log"
    stubs.mkdir()
    for name in ("sbatch", "sacct", "sacctmgr", "squeue", "sinfo", "scontrol"):
        (stubs / name).write_text(STUB.format(log=log))
        (stubs / name).chmod(0o755)
    for key, value in SLURM_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PATH", f"{stubs}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}")
    return log


def test_slurm_submission_flags_with_stub_sbatch(workflow_copy, tmp_path, monkeypatch):
    """What sbatch actually receives for the GPU training rule (stub SLURM binaries log their argv)."""
    log = _stub_slurm(tmp_path, monkeypatch)
    check = workflow_copy / "results/checks/paper/data.json"
    check.parent.mkdir(parents=True)
    check.write_text("{}")
    target = "results/checkpoints/paper/seed0/supervised/deit_s/model.safetensors"
    # snakemake waits for the (stub) job forever: kill it once sbatch has been called
    proc = subprocess.Popen(["snakemake", "--cores", "all", "--profile", "slurm", target], cwd=workflow_copy,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            if log.exists() and "sbatch" in log.read_text():
                break
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()
    calls = [line for line in log.read_text().splitlines() if line.startswith("sbatch")]
    assert calls, log.read_text()
    flags = calls[0]
    for flag in ("-A proj123", "-p gpu", "--mem 256000", "-t 1217", "--gpus=8", "--cpus-per-gpu=8",
                 "--nodes=1", "--signal=TERM@600"):
        assert flag in flags, f"{flag!r} missing from: {flags}"
    assert "--ntasks-per-gpu" not in flags  # tasks_per_gpu=0: one torchrun launcher for 8 GPUs


def test_dvc_stage_runs_the_params_scale_under_the_slurm_profile(workflow_copy, monkeypatch):
    """`SNAKEMAKE_PROFILE=slurm dvc repro` runs each DVC stage's command through the cluster profile; the
    scale is params.yaml's (what DVC records), not the profile's `config: scale=paper`."""
    _edit_params(workflow_copy, lambda params: params.update(scale="smoke"))
    run([sys.executable, "-m", "vitpe.dvc_stages"], workflow_copy)  # the smoke scale's stages
    stage = yaml.safe_load((workflow_copy / "dvc.yaml").read_text())["stages"]["train_supervised-deit_s-seed0"]
    argv = stage["cmd"].replace("${scale}", "smoke").split()
    assert argv[:4] == ["python", "-m", "vitpe.launch", "snakemake"]
    assert argv[-2:] == ["results/checkpoints/smoke/seed0/supervised/deit_s/model.safetensors",
                         "results/checkpoints/smoke/seed0/supervised/deit_s/log.jsonl"]
    for key, value in SLURM_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SNAKEMAKE_PROFILE", "slurm")
    dry = run([*argv[3:4], "-n", "-p", *argv[4:]], workflow_copy).stdout
    block = _job_block(dry, "train_supervised", "results/checkpoints/smoke/seed0/supervised/deit_s/model.safetensors")
    assert _resources(block)["slurm_partition"] == "gpu" and _resources(block)["gpu"] == "2"  # the profile's
    assert "results/checkpoints/paper/" not in dry
    assert "rule eval_supervised" not in dry  # the stage runs its own job only
