"""The typed runs (vitpe.runs): one frozen description of a run, one dependency record for the
workflow's run-config file, the resume fingerprint and the weights metadata."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import yaml

from conftest import ROOT, copy_workflow, make_image_folder, micro_params_file, run as run_command
from vitpe.config import apply_overrides, load_params
from vitpe.runs import (RUNTIME_KEYS, dependency_record, encoder_run, pretrain_run, stage_record, supervised_run,
                        with_recipe)
from vitpe.train.checkpoint import load_state
from vitpe.models.weights import read_metadata
from vitpe.train.supervised import train_supervised


def test_run_config_file_fingerprint_and_weights_metadata_are_one_record(tmp_path):
    """The file Snakemake writes, the state a resumed run checks and the metadata of the weights."""
    data_root = tmp_path / "data"
    make_image_folder(data_root / "imagenet")
    params_file = micro_params_file(tmp_path, data_root)
    (tmp_path / "workflow_copy").mkdir()
    workflow = copy_workflow(tmp_path / "workflow_copy", yaml.safe_load(params_file.read_text()))
    run_command(["snakemake", "--list-rules"], workflow)  # parsing the workflow writes the run configs
    written = json.loads((workflow / "results/configs/tiny/seed0/mjp.json").read_text())

    run = supervised_run(load_params(params_file), "mjp")
    out = tmp_path / "out"
    train_supervised(run, out, device="cpu", max_steps=1)  # publishes truncated weights, keeps the state
    metadata = read_metadata(out / "model.safetensors")
    assert metadata.pop("truncated") == {"steps": 1, "total_steps": 15}
    fingerprint = json.loads(load_state(out / "state" / "state.pt")["fingerprint"])
    assert fingerprint["run"] == metadata == written == dependency_record(run)
    assert written["experiment"] == "mjp" and written["jigsaw"]["start_epoch"] == 1
    assert written["dal"] == {"head": "nonlinear", "weight": 0.01, "final_ratio": 0.5}
    # on CPU the thread count is fingerprinted too: bit-exact resume depends on it
    assert set(fingerprint) == {"run", "world_size", "train_images", "cpu_threads"}
    assert fingerprint["train_images"] == 20 and fingerprint["cpu_threads"] == torch.get_num_threads()
    assert not set(RUNTIME_KEYS) & (set(written) | set(written["recipe"]))
    assert "train_dir" not in written and "val_dir" not in written and "pretrained" not in written


@pytest.mark.parametrize("key, value", [("num_workers", 3), ("checkpoint_every", 7), ("eval_batch_size", 5),
                                        ("gpu_memory_gb", 40.0), ("grad_checkpointing", True)])
def test_a_runtime_key_changes_no_record(key, value):
    params = load_params(ROOT / "params.yaml")
    for stage, section in (("supervised", "supervised"), ("finetune", "finetune"), ("linprobe", "linprobe"),
                           ("pretrain", "pretrain.recipe")):
        name = "mjp" if stage == "supervised" else "adpe_rel_coordinate"
        if key == "eval_batch_size" and stage == "pretrain":
            continue  # pretraining evaluates nothing
        changed = apply_overrides(params, [f"scales.tiny.{section}.{key}={json.dumps(value)}"])
        assert stage_record(changed, stage, name) == stage_record(params, stage, name), (stage, key)
        run = pretrain_run(changed, name) if stage == "pretrain" else encoder_run(changed, name, stage) \
            if stage != "supervised" else supervised_run(changed, name)
        assert getattr(run.runtime, key) == value
    # a recipe key is a dependency
    longer = apply_overrides(params, ["scales.tiny.supervised.epochs=31"])
    assert stage_record(longer, "supervised", "mjp")["recipe"]["epochs"] == 31
    assert stage_record(longer, "supervised", "mjp") != stage_record(params, "supervised", "mjp")


def test_with_recipe_routes_runtime_keys_and_the_record_ignores_them():
    run = supervised_run(load_params(ROOT / "params.yaml"), "deit_s")
    faster = with_recipe(run, num_workers=4, checkpoint_every=1)
    assert (faster.runtime.num_workers, faster.runtime.checkpoint_every) == (4, 1)
    assert dependency_record(faster) == dependency_record(run)
    assert dependency_record(with_recipe(run, epochs=2))["recipe"]["epochs"] == 2
    # the accumulation the memory plan resolves replaces the recipe's as written
    assert dependency_record(with_recipe(run, accum_steps="auto"), accum_steps=1) == dependency_record(run)


def test_a_frozen_run_refuses_assignment():
    params = load_params(ROOT / "params.yaml")
    run = supervised_run(params, "mjp")
    for target, field, value in ((run, "seed", 1), (run.recipe, "epochs", 1), (run.jigsaw, "ratio", 0.3),
                                 (run.model, "depth", 1), (run.runtime, "num_workers", 2),
                                 (pretrain_run(params, "adpe_abs_coordinate").adversary, "eps", 2.0)):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(target, field, value)


def test_unknown_recipe_keys_name_the_block():
    from vitpe.errors import ConfigError

    params = load_params(ROOT / "params.yaml")
    bad = json.loads(json.dumps(params))
    bad["supervised"]["mjp"]["recipe"] = {"epochz": 3}
    with pytest.raises(ConfigError, match=r"unknown key 'epochz' under supervised\.mjp\.recipe"):
        supervised_run(bad, "mjp")


def test_the_pe_init_ablation_changes_only_its_own_records():
    """deit_s_normal_init / mjp_deit_init differ from deit_s / mjp by the PE init alone (a change retrains
    only them), and DeiT's PE keeps the record it had before its init was an option, written out or not."""
    params = load_params(ROOT / "params.yaml")
    deit, mjp = stage_record(params, "supervised", "deit_s"), stage_record(params, "supervised", "mjp")
    assert list(deit) == list(mjp) == ["scale", "seed", "data", "model", "recipe", "pos_embed", "num_classes", "jigsaw",
                                       "dal", "unk", "first_block", "protocol", "rpe", "global_pool", "experiment"]
    normal = stage_record(params, "supervised", "deit_s_normal_init")
    assert normal.pop("learnable") == {"init": "normal"}
    assert {**normal, "experiment": "deit_s"} == deit
    mjp_deit = stage_record(params, "supervised", "mjp_deit_init")
    assert mjp_deit["unk"] == {"init": "trunc_normal", "weight_decay": True} and mjp["unk"]["init"] == "normal"
    assert {**mjp_deit, "experiment": "mjp", "unk": mjp["unk"]} == mjp
    explicit = apply_overrides(params, ["supervised.deit_s.learnable={init: trunc_normal}"])
    assert supervised_run(explicit, "deit_s").learnable is None
    assert json.dumps(stage_record(explicit, "supervised", "deit_s")) == json.dumps(deit)
    assert "learnable" not in stage_record(params, "finetune", "mae")  # encoders keep their records too


def test_mjp_gamma_is_the_scales_unless_the_experiment_sets_one():
    """At 0.1 the tiny 4 x 4 grid selects at most one patch, which no permutation moves: the tiny scale
    trains MJP, and the attacks' shuffled client shuffles, at its own gamma; the paper scale at train.sh's."""
    from vitpe.attacks.runner import attack_settings

    for scale, gamma in (("tiny", 0.15), ("smoke", 0.1), ("paper", 0.1)):
        params = load_params(ROOT / "params.yaml", [f"scale={scale}"])
        assert params["scales"][scale]["mjp_gamma"] == gamma
        for name in ("mjp", "mjp_deit_init", "mjp_april"):
            assert supervised_run(params, name).jigsaw.ratio == gamma, (scale, name)
        assert attack_settings(params).threat.shuffle_ratio == gamma
    params = load_params(ROOT / "params.yaml", ["supervised.mjp.jigsaw.ratio=0.3", "attacks.threat.shuffle_ratio=0.9"])
    assert supervised_run(params, "mjp").jigsaw.ratio == 0.3
    assert supervised_run(params, "mjp_deit_init").jigsaw.ratio == 0.15
    assert attack_settings(params).threat.shuffle_ratio == 0.9
    # the naive baseline shuffles every patch: no gamma, and its record stays as it was
    assert stage_record(params, "supervised", "naive_shuffle")["jigsaw"]["ratio"] == 0.1


def test_committed_run_configs_are_the_ones_the_workflow_writes(tmp_path):
    """results/configs/<scale>/ is versioned with the results (git, a DVC out): each run's resolved
    configuration. Parsing the workflow with the committed params.yaml writes exactly those files."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    workflow = copy_workflow(tmp_path, params)
    run_command(["snakemake", "--list-rules"], workflow)
    scale = f"results/configs/{params['scale']}"
    written = {p.relative_to(workflow / scale): p.read_text() for p in (workflow / scale).rglob("*.json")}
    committed = {p.relative_to(ROOT / scale): p.read_text() for p in (ROOT / scale).rglob("*.json")}
    assert len(written) == 78 and written == committed  # 3 seeds x (7 classifiers + 5 x 3 stages + 2 x 2 transfers)
