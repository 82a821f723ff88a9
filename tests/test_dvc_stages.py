"""dvc.yaml's stages are the Snakemake DAG's jobs (vitpe.dvc_stages): generated for params.yaml, checked
against it, and refused by the launcher when they are not."""
from __future__ import annotations

import sys

import yaml

from conftest import ROOT, run

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_committed_dvc_yaml_is_generated_from_the_dag():
    check = run([sys.executable, "-m", "vitpe.dvc_stages", "--check"], ROOT, check=False)
    assert check.returncode == 0, check.stderr


def test_each_job_is_a_stage_with_its_upstream_outputs_and_own_params():
    evaluation = STAGES["eval_supervised-mjp-seed0"]
    assert "results/checkpoints/tiny/seed0/supervised/mjp/model.safetensors" in evaluation["deps"]
    assert {"src/vitpe", "Snakefile", "workflow"} <= set(evaluation["deps"])
    assert {"supervised.mjp", "evaluation", "scales.tiny.supervised", "data.embedded"} <= set(evaluation["params"])
    assert "supervised.deit_s" not in evaluation["params"]  # a DeiT-S change leaves MJP's stages alone
    training = STAGES["train_supervised-mjp-seed0"]
    assert "--allowed-rules check_data synth_data train_supervised --" in training["cmd"]  # its own job only
    assert training["outs"] == ["results/checkpoints/tiny/seed0/supervised/mjp/model.safetensors",
                                "results/checkpoints/tiny/seed0/supervised/mjp/log.jsonl"]  # cached
    assert {"results/metrics/tiny/seed0/mjp/classify.json": {"cache": False}} in evaluation["outs"]  # in git
    outs = [next(iter(out)) if isinstance(out, dict) else out for stage in STAGES.values() for out in stage["outs"]]
    assert len(outs) == len(set(outs))
    # the scale's MJP gamma: a training param of the models that take it, and of every attack (its client)
    assert "scales.tiny.mjp_gamma" in training["params"]
    assert "scales.tiny.mjp_gamma" not in STAGES["train_supervised-deit_s-seed0"]["params"]
    assert "scales.tiny.mjp_gamma" in STAGES["attack_model-deit_s-seed0"]["params"]
    assert len([name for name in STAGES if name.startswith("train_supervised-")]) == 7 * 3  # 7 classifiers, 3 seeds
    assert not [name for name in STAGES if name.startswith(("synth_data", "check_data"))]  # rebuilt from params


def test_a_dvc_yaml_of_other_params_is_refused(workflow_copy, monkeypatch):
    """The workflow copy's dvc.yaml is the tiny scale's 3 seeds; its params.yaml has 2."""
    stale = run([sys.executable, "-m", "vitpe.dvc_stages", "--check"], workflow_copy, check=False)
    assert stale.returncode == 1 and "make dvc-yaml" in stale.stderr
    monkeypatch.setenv("DVC_STAGE", "train_supervised-deit_s-seed0")  # as `dvc repro` runs a stage
    launched = run([sys.executable, "-m", "vitpe.launch", "snakemake", "-n", "--cores", "1",
                    "results/tables/main.tex"], workflow_copy, check=False)
    assert launched.returncode == 1 and launched.stderr.startswith("error: dvc.yaml's stages are not those")
    assert "wrote dvc.yaml" in run([sys.executable, "-m", "vitpe.dvc_stages"], workflow_copy).stdout
    stages = yaml.safe_load((workflow_copy / "dvc.yaml").read_text())["stages"]
    assert "train_supervised-deit_s-seed1" in stages and "train_supervised-deit_s-seed2" not in stages
    assert run([sys.executable, "-m", "vitpe.launch", "snakemake", "-n", "--cores", "1", "results/tables/main.tex"],
               workflow_copy).returncode == 0
