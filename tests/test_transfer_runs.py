"""The typed transfer runs (vitpe.runs.transfer_run): the scale's transfer recipe and the encoder's
architecture, built once from params; their dependency record is the transfer rules' run-config file."""
from __future__ import annotations

import dataclasses
import json

import pytest

from conftest import ROOT, copy_workflow, micro_params, run as run_command
from vitpe.config import apply_overrides, load_params
from vitpe.errors import ConfigError
from vitpe.runs import (DetectionRecipe, SegmentationRecipe, TransferRuntime, dependency_record, pretrain_run,
                        stage_record, transfer_run)

TRANSFER_RUNTIME_KEYS = tuple(f.name for f in dataclasses.fields(TransferRuntime))


@pytest.fixture(scope="module")
def params() -> dict:
    return load_params(ROOT / "params.yaml")


def test_the_run_holds_the_scale_recipe_and_the_encoder_architecture(params):
    ade = transfer_run(params, "ade20k", "mae")
    written = params["scales"]["tiny"]["transfer"]["ade20k"]
    assert isinstance(ade.recipe, SegmentationRecipe) and (ade.task, ade.name, ade.scale) == ("ade20k", "mae", "tiny")
    assert ade.recipe.iters == written["iters"] and ade.recipe.resize_scale == tuple(written["resize_scale"])
    assert ade.runtime == TransferRuntime(**{k: written[k] for k in TRANSFER_RUNTIME_KEYS})
    assert ade.model == pretrain_run(params, "mae").model and ade.rpe is None
    assert ade.data_root.name == "ade20k" and ade.data == "embedded"
    coco = transfer_run(params, "coco", "adpe_rel_coordinate")
    assert isinstance(coco.recipe, DetectionRecipe) and coco.recipe.global_blocks == (-1,)
    assert coco.model.img_size == params["scales"]["tiny"]["pretrain"]["mae_plus"]["crop_size"]  # as pretrained
    # the pretraining iRPE without its adversary (the backbone keeps the RPE, not the adversary)
    assert pretrain_run(params, "adpe_rel_coordinate").rpe_config.adversary == "coordinate"
    assert coco.rpe is not None and (coco.rpe.lookup, coco.rpe.adversary, coco.rpe.scale_rpe_query) == \
        ("interp", None, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        coco.recipe.iters = 1


def test_the_run_config_file_is_the_dependency_record(tmp_path):
    """What Snakemake writes for the transfer rules: the run minus its runtime and machine paths."""
    workflow = copy_workflow(tmp_path, micro_params())
    run_command(["snakemake", "--list-rules"], workflow)  # parsing the workflow writes the run configs
    params = load_params(workflow / "params.yaml")
    for task in ("ade20k", "coco"):
        written = json.loads((workflow / f"results/configs/tiny/seed0/transfer_{task}/mae.json").read_text())
        run = transfer_run(params, task, "mae")
        assert written == dependency_record(run) == stage_record(params, f"transfer_{task}", "mae")
        assert set(written) == {"experiment", "task", "scale", "seed", "data", "model", "rpe", "recipe"}
        assert written["recipe"]["iters"] == 4
        assert written["model"] == dataclasses.asdict(pretrain_run(params, "mae").model)
        assert not set(TRANSFER_RUNTIME_KEYS) & set(written["recipe"])


@pytest.mark.parametrize("key, value", [("num_workers", 3), ("checkpoint_every", 7), ("log_every", 2)])
def test_a_transfer_runtime_key_changes_no_record(params, key, value):
    for task in ("ade20k", "coco"):
        changed = apply_overrides(params, [f"scales.tiny.transfer.{task}.{key}={value}"])
        assert getattr(transfer_run(changed, task, "mae").runtime, key) == value
        assert stage_record(changed, f"transfer_{task}", "mae") == stage_record(params, f"transfer_{task}", "mae")


@pytest.mark.parametrize("key, value", [("iters", 50), ("val_interval", 10), ("amp", "bf16")])
def test_a_transfer_recipe_key_is_a_dependency(params, key, value):
    changed = apply_overrides(params, [f"scales.tiny.transfer.ade20k.{key}={value}"])
    record = stage_record(changed, "transfer_ade20k", "mae")
    assert record["recipe"][key] == value and record != stage_record(params, "transfer_ade20k", "mae")


def test_bad_transfer_settings_fail_naming_the_key(params):
    with pytest.raises(ConfigError, match="unknown transfer task 'voc'"):
        transfer_run(params, "voc", "mae")
    with pytest.raises(ConfigError, match="unknown pretraining experiment 'deit_s'"):
        transfer_run(params, "ade20k", "deit_s")
    without = json.loads(json.dumps(params))
    del without["scales"]["tiny"]["transfer"]
    with pytest.raises(ConfigError, match=r"^params.yaml: scales\.tiny\.transfer\.coco is not defined$"):
        transfer_run(without, "coco", "mae")
    extra = json.loads(json.dumps(params))
    extra["scales"]["tiny"]["transfer"]["ade20k"]["window_size"] = 4  # a COCO key
    with pytest.raises(ConfigError, match=r"scales\.tiny\.transfer\.ade20k: key 'window_size' is not a "
                                          r"SegmentationRecipe key"):
        transfer_run(extra, "ade20k", "mae")
    # refused when the run is built (the workflow parses it before any job starts), not after the encoder loads
    short = apply_overrides(params, ["scales.tiny.transfer.ade20k.iters=4"])
    with pytest.raises(ConfigError, match=r"^params.yaml: scales\.tiny\.transfer\.ade20k: iters \(4\) must exceed "
                                          r"warmup_iters \(4\): the poly decay follows the warm-up$"):
        stage_record(short, "transfer_ade20k", "mae")
