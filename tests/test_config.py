"""params.yaml validation: every error is one line naming the key, before any work starts."""
from __future__ import annotations

import copy

import pytest
import yaml

from conftest import ROOT, run
from vitpe.cli import main
from vitpe.config import apply_overrides, load_params, supervised_run, validate_params
from vitpe.errors import ConfigError

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def test_shipped_params_are_valid_and_resolve():
    params = load_params(ROOT / "params.yaml")
    run_cfg = supervised_run(params, "deit_s")
    assert run_cfg.scale == "tiny" and run_cfg.pos_embed == "learnable"
    assert run_cfg.num_classes == params["data"]["embedded"]["num_classes"] >= 10
    paper = supervised_run(apply_overrides(params, ["scale=paper"]), "deit_s")
    # DeiT-S as trained by the official MJP code: ViT-S/16, global batch 1024, lr 5e-4 * 1024 / 512
    assert paper.model == {"img_size": 224, "patch_size": 16, "embed_dim": 384, "depth": 12,
                           "num_heads": 6, "mlp_ratio": 4.0}
    assert paper.recipe["batch_size"] * paper.recipe["base_lr"] / paper.recipe["lr_batch_divisor"] == 1e-3
    assert paper.recipe["drop_path"] == 0.0 and paper.recipe["warmup_epochs"] == 20


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda p: p["scales"]["tiny"]["model"].update(depht=3), "unknown key 'depht' under scales.tiny.model"),
        (lambda p: p.update(seed="zero"), "seed: 'zero' is not of type 'integer'"),
        (lambda p: p["experiments"].update(supervised=["deit_xl"]), "unknown experiment 'deit_xl'"),
        (lambda p: p.update(scale="huge"), "scale: 'huge' is not one of"),
        (lambda p: p["scales"]["paper"]["supervised"].update(amp="fp8"), "scales.paper.supervised.amp"),
    ],
)
def test_bad_params_name_the_key(mutate, expected):
    params = copy.deepcopy(PARAMS)
    mutate(params)
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        validate_params(params)


def test_overrides_are_validated():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides(PARAMS, ["scale"])
    with pytest.raises(ConfigError, match="scale: 'gigantic' is not one of"):
        validate_params(apply_overrides(PARAMS, ["scale=gigantic"]))


def test_cli_reports_one_line_and_exit_code(tmp_path, capsys):
    bad = copy.deepcopy(PARAMS)
    bad["data"]["embedded"]["num_clases"] = 3
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(bad))
    out = tmp_path / "table.tex"
    code = main(["report", "table", "--params", str(path), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "unknown key 'num_clases' under data.embedded" in err
    assert not out.exists()


def test_snakemake_refuses_bad_params_before_any_job(workflow_copy):
    params = yaml.safe_load((workflow_copy / "params.yaml").read_text())
    params["supervised"]["deit_s"]["pos_embed"] = "rope"
    (workflow_copy / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run(["snakemake", "-n", "--cores", "1"], workflow_copy, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "supervised.deit_s.pos_embed: 'rope' is not one of" in out and "Traceback" not in out
    assert not (workflow_copy / "results").exists()


# --- the smoke scale: the paper scale with counts cut ------------------------------------------------

# Leaf keys the smoke scale may change: step counts, batch sizes, sample counts, and the two named
# exceptions (data-loader workers on 2 cores; COCO's test score threshold after 2 iterations).
SMOKE_MAY_CUT = {"data", "images", "inverting_gradients", "gradvit", "epochs", "warmup_epochs", "steps_per_epoch",
                 "batch_size", "eval_batch_size", "checkpoint_every", "iters", "warmup_iters", "milestones",
                 "val_interval", "log_every", "chunk", "num_workers", "test_score_thr"}


def _leaf_differences(a: object, b: object, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for key in sorted(set(a) | set(b))
                for d in _leaf_differences(a.get(key), b.get(key), f"{path}.{key}" if path else key)]
    return [] if a == b else [path]


def test_smoke_scale_is_the_paper_scale_with_counts_cut():
    params = load_params(ROOT / "params.yaml")
    smoke, paper = params["scales"]["smoke"], params["scales"]["paper"]
    changed = _leaf_differences(smoke, paper)
    assert changed, "the smoke scale must cut something"
    assert {path.split(".")[-1] for path in changed} <= SMOKE_MAY_CUT, changed
    # the written form is one line per difference: every override is a leaf or a dict of leaves
    written = PARAMS["scales"]["smoke"]
    assert written["inherit"] == "paper" and "model" not in written
    # the models, inputs and protocols the smoke DAG must exercise
    assert smoke["model"]["img_size"] == 224 and smoke["pretrain"]["model"]["embed_dim"] == 768
    assert smoke["pretrain"]["mae_plus"] == {"num_crops": 4, "crop_size": 112, "crop_scale": [0.08, 1.0]}
    assert smoke["transfer"]["ade20k"]["crop_size"] == 512 and smoke["transfer"]["coco"]["image_size"] == 1024
    assert smoke["supervised"]["randaugment"] == paper["supervised"]["randaugment"] != ""
    run_cfg = supervised_run(apply_overrides(params, ["scale=smoke"]), "deit_s")
    assert run_cfg.recipe["steps_per_epoch"] == smoke["supervised"]["steps_per_epoch"] >= 1


@pytest.mark.parametrize(
    "override, expected",
    [
        ({"supervised.epoch": 1}, "scales.smoke: override 'supervised.epoch': scales.paper has no key 'supervised.epoch'"),
        ({"nothing.epochs": 1}, "scales.paper has no key 'nothing'"),
        ({"inherit": "huge"}, "scales.smoke.inherit: 'huge' is not a scale written in full"),
        ({"supervised.epochs": 0}, "scales.smoke.supervised.epochs: 0 is less than the minimum of 1"),
    ],
)
def test_inherited_scale_errors_name_the_key(override, expected):
    params = copy.deepcopy(PARAMS)
    params["scales"]["smoke"].update(override)
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        validate_params(params)
