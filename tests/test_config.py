"""params.yaml validation: every error is one line naming the key, before any work starts."""
from __future__ import annotations

import copy
import difflib
import json
import re

import pytest
import yaml

from conftest import ROOT, run
from vitpe.cli import main
from vitpe.config import apply_overrides, load_params, validate_params
from vitpe.models.spec import ViTSpec
from vitpe.runs import supervised_run
from vitpe.errors import ConfigError

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def test_shipped_params_are_valid_and_resolve():
    params = load_params(ROOT / "params.yaml")
    run_cfg = supervised_run(params, "deit_s")
    assert run_cfg.scale == "tiny" and run_cfg.pos_embed == "learnable"
    assert run_cfg.num_classes == params["data"]["embedded"]["num_classes"] >= 10
    paper = supervised_run(apply_overrides(params, ["scale=paper"]), "deit_s")
    # DeiT-S as trained by the official MJP code: ViT-S/16, global batch 1024, lr 5e-4 * 1024 / 512
    assert paper.model == ViTSpec(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0)
    assert paper.recipe.batch_size * paper.recipe.base_lr / paper.recipe.lr_batch_divisor == 1e-3
    assert paper.recipe.drop_path == 0.0 and paper.recipe.warmup_epochs == 20


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


@pytest.mark.parametrize("override, expected", [
    # an experiment's recipe/model overrides are validated merged into the active scale's block
    ("supervised.mjp.recipe={epochs: ten}", "supervised.mjp.recipe.epochs: 'ten' is not of type 'integer'"),
    ("supervised.mjp.recipe={epochz: 5}", "unknown key 'epochz' under supervised.mjp.recipe"),
    ("pretrain.mae.recipe={mask_ratio: 1.0}",
     "pretrain.mae.recipe.mask_ratio: 1.0 is greater than or equal to the maximum of 1"),
    ("pretrain.mae.finetune_recipe={base_lr: 0}",
     "pretrain.mae.finetune_recipe.base_lr: 0 is less than or equal to the minimum of 0"),
    ("pretrain.mae.linprobe_recipe={optimizer: sgd}", "pretrain.mae.linprobe_recipe.optimizer: 'sgd' is not one of"),
    ("pretrain.mae.model={dept: 2}", "unknown key 'dept' under pretrain.mae.model"),
    # the transfer blocks (allOf parts) name the bad value, not every key as unevaluated
    ("scales.tiny.transfer.ade20k.iters=0", "scales.tiny.transfer.ade20k.iters: 0 is less than the minimum of 1"),
    ("scales.tiny.transfer.coco.iterz=3", "unknown key 'iterz' under scales.tiny.transfer.coco"),
    # a misspelt attacked or compared model was silently skipped
    ("attacks.finetuned=[mea]", "attacks.finetuned names 'mea', defined neither under pretrain: nor as an imported encoder"),
    ("attacks.compare=[[deit_s, mjpp]]", "attacks.compare names 'mjpp', which is no experiment"),
])
def test_override_neighbours_are_one_line_before_any_work(tmp_path, capsys, override, expected):
    out = tmp_path / "table.tex"
    code = main(["report", "table", "--params", str(ROOT / "params.yaml"), "--set", override, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"error: {ROOT / 'params.yaml'} (with overrides): ")
    assert expected in err and "\n" not in err
    assert not out.exists()


def test_params_file_that_is_not_text_is_one_line(tmp_path, capsys):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"\xff\xfe\x00scale: tiny")
    out = tmp_path / "table.tex"
    assert main(["report", "table", "--params", str(path), "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: {path}: not a text file (invalid start byte at byte 0); expected YAML\n"
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
                 "val_interval", "log_every", "chunk", "num_workers", "test_score_thr",
                 "compile"}  # CPU inductor compiles cost minutes per smoke job; tests/test_compile.py covers it


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
    assert run_cfg.recipe.steps_per_epoch == smoke["supervised"]["steps_per_epoch"] >= 1


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


# --- recipes written as a base plus one line per difference -------------------------------------------

# Every scale as params.yaml resolved before its recipes inherited one another, plus the neutral
# fine-tuning keys the supervised recipe (and so linprobe's layer_decay) gained. A value changed on
# purpose is changed here too: python -c "import json; from vitpe.config import load_params;
# print(json.dumps(load_params()['scales'], indent=1, sort_keys=True))" > tests/data/resolved_scales.json
RESOLVED_SCALES = ROOT / "tests" / "data" / "resolved_scales.json"
INHERITED_BLOCKS = [(scale, block) for scale in ("tiny", "paper") for block in ("finetune", "linprobe")]


def test_resolved_scales_are_unchanged_by_recipe_inheritance():
    resolved = json.loads(json.dumps(load_params(ROOT / "params.yaml")["scales"]))  # tuples -> lists, as frozen
    frozen = json.loads(RESOLVED_SCALES.read_text())
    assert _leaf_differences(resolved, frozen) == []
    # 1 and 1.0 compare equal: the types are part of the recipe too (an int lr would print differently)
    assert json.dumps(resolved, sort_keys=True) == json.dumps(frozen, sort_keys=True)


@pytest.mark.parametrize("scale, block", INHERITED_BLOCKS)
def test_encoder_recipes_are_the_supervised_recipe_plus_one_line_per_difference(scale, block):
    written = PARAMS["scales"][scale][block]
    base = PARAMS["scales"][scale]["supervised"]
    assert written["inherit"] == "supervised"
    overrides = {key: value for key, value in written.items() if key != "inherit"}
    assert overrides and all(base[key] != value for key, value in overrides.items()), overrides
    resolved = load_params(ROOT / "params.yaml", [f"scale={scale}"])["scales"][scale][block]
    assert resolved == {**base, **overrides}


def test_supervised_recipe_holds_the_fine_tuning_keys_at_neutral_values():
    for scale in ("tiny", "smoke", "paper"):
        recipe = load_params(ROOT / "params.yaml")["scales"][scale]["supervised"]
        # what vitpe.train reads for an absent key: no layer decay, DeiT's cosine, AdamW
        assert (recipe["layer_decay"], recipe["warmup_prefix"], recipe["optimizer"]) == (None, False, "adamw")


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda s: s["finetune"].update(epochz=3),
         "scales.tiny.finetune: override 'epochz': scales.tiny.supervised has no key 'epochz'"),
        (lambda s: s["linprobe"].update(inherit="supervisd"),
         "scales.tiny.linprobe.inherit: 'supervisd' is not a block of scales.tiny written in full"),
        (lambda s: s["linprobe"].update(inherit="finetune"),
         "scales.tiny.linprobe.inherit: 'finetune' is not a block of scales.tiny written in full"),
        (lambda s: s["finetune"].update(head_init_std=None), "scales.tiny.finetune.head_init_std: None is not of type"),
        # a bad base value is named where it is written, not in the blocks copying it
        (lambda s: s["supervised"].update(amp="fp8"), "scales.tiny.supervised.amp: 'fp8' is not one of"),
    ],
)
def test_inherited_recipe_errors_name_the_key(mutate, expected):
    params = copy.deepcopy(PARAMS)
    mutate(params["scales"]["tiny"])
    with pytest.raises(ConfigError, match=re.escape(expected)) as err:
        validate_params(params)
    assert "\n" not in str(err.value)


def test_smoke_overrides_apply_to_the_resolved_encoder_recipes():
    params = copy.deepcopy(PARAMS)
    params["scales"]["smoke"]["finetune.mixup"] = 0.5  # a key paper's finetune inherits from supervised
    smoke = validate_params(params)["scales"]["smoke"]
    assert smoke["finetune"]["mixup"] == 0.5 and smoke["supervised"]["mixup"] == 0.8
    assert smoke["finetune"]["epochs"] == 2 and "inherit" not in smoke["finetune"]


# --- configuration the DAG cannot carry: refused before any job starts ------------------------------

def _rename_supervised(params: dict, old: str, new: str) -> None:
    params["supervised"][new] = params["supervised"].pop(old)
    params["experiments"]["supervised"] = [new if n == old else n for n in params["experiments"]["supervised"]]


@pytest.mark.parametrize(
    "mutate, expected",
    [
        # experiment names become the {exp} wildcard, file names and shell words
        (lambda p: _rename_supervised(p, "mjp", "mjp-v2"),
         "supervised: 'mjp-v2': expected an experiment name of letters, digits and _"),
        (lambda p: p["experiments"].update(transfer=["mae", "adpe abs"]),
         "experiments.transfer.1: 'adpe abs': expected an experiment name"),
        (lambda p: p["pretrain"].update({"mae;rm": p["pretrain"]["mae"]}),
         "pretrain: 'mae;rm': expected an experiment name"),
        (lambda p: p["attacks"].update(compare=[["deit_s", "mjp/2"]]),
         "attacks.compare.0.1: 'mjp/2': expected an experiment name"),
        # the MJP tables and figures need a supervised model
        (lambda p: p["experiments"].update(supervised=[]), "experiments.supervised: [] should be non-empty"),
        (lambda p: p["experiments"].update(supervised=["deit_s"]),
         "attacks.models names 'naive_shuffle', which neither experiments.supervised trains nor experiments.imported holds"),
        # paths go unquoted on shell lines
        (lambda p: p["data"]["real"].update(imagenet="/data/my imagenet"),
         "data.real.imagenet: '/data/my imagenet': expected a path of letters, digits and _ . / + @ : , = -"),
        (lambda p: p["data"]["mini"].update(root="data/mini$(id)"), "data.mini.root: 'data/mini$(id)': expected a path"),
        (lambda p: p["data"]["embedded"].update(root="~/embedded"), "data.embedded.root: '~/embedded': expected a path"),
        (lambda p: p["attacks"].update(images_dir="val 2"), "attacks.images_dir: 'val 2': expected null, or a path"),
        (lambda p: p["attacks"]["metrics"].update(lpips_alexnet="w*.pth"), "attacks.metrics.lpips_alexnet: 'w*.pth'"),
        # the APRIL variants the DAG trains and attacks by the closed form
        (lambda p: p["attacks"].update(april_models=["deit_s_aprl"]),
         "attacks.april_models names 'deit_s_aprl', not defined under supervised:"),
        (lambda p: p["attacks"].update(april_models=["deit_s"]),
         "attacks.april_models: supervised.deit_s is not APRIL-compatible (set april: true)"),
        # APRIL inverts one image's gradient
        (lambda p: p["attacks"]["threat"].update(batch_size=4),
         "attacks.threat.batch_size is 4, but APRIL's closed form needs 1"),
        (lambda p: (p["attacks"]["threat"].update(batch_size=2), p["attacks"].update(closed_form=[])),
         "attacks.threat.batch_size is 2, but APRIL's closed form needs 1"),
    ],
)
def test_configuration_the_dag_cannot_carry_is_refused(mutate, expected):
    params = copy.deepcopy(PARAMS)
    mutate(params)
    with pytest.raises(ConfigError, match=re.escape(expected)) as err:
        validate_params(params)
    assert "\n" not in str(err.value)


def test_configuration_the_dag_can_carry_is_accepted():
    params = copy.deepcopy(PARAMS)
    params["experiments"].update(pretrain=[], transfer=[])  # the DAG then builds the supervised half only
    params["attacks"].update(finetuned=[], compare=[["deit_s", "mjp"]])
    params["data"]["real"]["imagenet"] = "/scratch/user-1/ILSVRC2012_v1.0/imagenet"
    validate_params(params)
    params["attacks"].update(april_models=[], closed_form=[], standard_closed_form=[], compare=[])
    params["attacks"]["threat"]["batch_size"] = 8  # optimisation attacks on batches, no APRIL
    validate_params(params)


@pytest.mark.parametrize("override, changed", [
    ("supervised.mjp.dal.weight=0.02",
     ["-     dal: {head: nonlinear, weight: 0.01}", "+     dal: {head: nonlinear, weight: 0.02}"]),
    ("scales.tiny.mjp_gamma=0.2", ["-     mjp_gamma: 0.15", "+     mjp_gamma: 0.2"]),
    ("scales.tiny.supervised.epochs=30", ["-       epochs: 45", "+       epochs: 30"]),
    ("experiments.transfer=[mae]", ["-   - adpe_abs_coordinate"]),  # a list shortened: only its item goes
])
def test_dvc_set_param_changes_only_the_line_it_sets(tmp_path, override, changed):
    """params.yaml is written as DVC's YAML writer writes it (block lists, empty nulls, flow maps within
    80 columns), so `dvc exp run -S` leaves every other line, comments included, as it was."""
    from dvc.utils.hydra import apply_overrides as dvc_apply_overrides

    original = (ROOT / "params.yaml").read_text()
    path = tmp_path / "params.yaml"
    path.write_text(original)
    dvc_apply_overrides(str(path), [override])
    diff = difflib.ndiff(original.splitlines(), path.read_text().splitlines())
    assert [line for line in diff if line[:2] in ("- ", "+ ")] == changed


def test_dvc_set_param_rewrite_keeps_the_resolved_params(tmp_path):
    """`dvc exp run -S` rewrites params.yaml (its own YAML style); the result resolves as `--set` does.

    A key a block inherits is not written in it: DVC adds it with a leading + (hydra's append syntax).
    """
    from dvc.utils.hydra import apply_overrides as dvc_apply_overrides

    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    sets = ["scales.tiny.finetune.epochs=3", "scales.paper.supervised.layer_decay=0.5"]
    dvc_apply_overrides(str(path), sets + ["+scales.paper.finetune.mixup=0.5"])
    rewritten = load_params(path)
    assert rewritten == load_params(ROOT / "params.yaml", sets + ["scales.paper.finetune.mixup=0.5"])
    paper = rewritten["scales"]["paper"]
    # the inheriting blocks follow their base unless they set the key themselves
    assert paper["linprobe"]["layer_decay"] == 0.5 and paper["finetune"]["layer_decay"] == 0.65
    assert paper["finetune"]["mixup"] == 0.5 and paper["supervised"]["mixup"] == 0.8
