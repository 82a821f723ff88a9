"""Published checkpoints as experiments (``experiments.imported``): the runs they stand for, the import
the workflow runs (architecture checked, the head cut to the dataset's ImageNet classes), the DAG that
evaluates, fine-tunes, transfers and attacks them, and their table rows.

The checkpoints are built in the official layouts by tests/test_importers.py's builders (random weights).
"""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
import yaml
from timm.data import ImageNetInfo

from conftest import ROOT, copy_workflow, run
from test_importers import (
    DEIT_S, TINY, TINY_SPEC, VIT_B, _images, _save, deit_layout, encoder_layout, mae_finetuned_layout, mjp_layout,
)
from vitpe.config import load_params, validate_params
from vitpe.errors import CheckpointError, ConfigError
from vitpe.train.published import import_experiment
from vitpe.models.spec import ViTSpec
from vitpe.report.tables import model_name, model_rows
from vitpe.runs import encoder_run, imported_experiments, pretrain_run, stage_record, supervised_run, transfer_run

WNIDS = list(ImageNetInfo().label_names())
# three ImageNet classes in folder (sorted) order, as the mini set holds a few: logits are these rows
CLASS_INDICES = (1, 500, 999)


def _published(params: dict, scale: str = "smoke", **entries: dict) -> dict:
    out = copy.deepcopy(params)
    out["scale"] = scale
    out["experiments"]["imported"] = entries
    return validate_params(out)


@pytest.fixture(scope="module")
def params() -> dict:
    return load_params(ROOT / "params.yaml")


@pytest.fixture
def imagenet_classes(tmp_path: Path) -> Path:
    """A mini-layout data root whose training classes are three ImageNet-1k wnids."""
    for index in CLASS_INDICES:
        (tmp_path / "data/imagenet/train" / WNIDS[index]).mkdir(parents=True)
    return tmp_path / "data"


def _tiny_smoke(params: dict, data_root: Path, **entries: dict) -> dict:
    """The smoke scale with the tests' tiny ViT as its model and a data root of ImageNet class folders."""
    out = _published(params, **entries)
    out["data"]["mini"].update(root=str(data_root), num_classes=len(CLASS_INDICES))
    out["scales"]["smoke"]["model"] = {**TINY, "mlp_ratio": 4.0}
    out["scales"]["smoke"]["pretrain"]["model"] = {**TINY, "mlp_ratio": 4.0}
    return out


# --- the runs they stand for ----------------------------------------------------------------------------

def test_published_classifiers_run_as_their_layouts_models(params):
    p = _published(params, deit_pub={"format": "deit", "path": "w/deit.pth", "arch": "deit-tiny"},
                   mjp_pub={"format": "mjp", "path": "w/mjp.pth"},
                   mae_ft={"format": "mae-finetuned", "path": "w/mae_ft.pth", "arch": "vit-large"})
    deit, mjp, mae_ft = (supervised_run(p, name) for name in ("deit_pub", "mjp_pub", "mae_ft"))
    assert deit.model == ViTSpec(224, 16, 192, 12, 3, 4.0) and deit.pos_embed == "learnable" and deit.dal is None
    # MJP's release: the unknown row and the DAL head (train.sh's gamma 0.1 and lambda 0.01)
    assert mjp.model == DEIT_S and mjp.pos_embed == "mjp" and mjp.dal.weight == 0.01 and mjp.jigsaw.ratio == 0.1
    assert mae_ft.model == ViTSpec(224, 16, 1024, 24, 16, 4.0) and mae_ft.global_pool
    assert mae_ft.protocol == "finetune" and mae_ft.recipe.layer_decay == p["scales"]["smoke"]["finetune"]["layer_decay"]
    assert {deit.num_classes, mjp.num_classes} == {p["data"]["mini"]["num_classes"]}
    assert stage_record(p, "supervised", "mjp_pub")["experiment"] == "mjp_pub"
    assert list(imported_experiments(p, "classifier")) == ["deit_pub", "mjp_pub", "mae_ft"]


def test_published_encoders_fine_tune_and_transfer_as_pretraining_encoders(params):
    p = _published(params, mae_pub={"format": "mae", "path": "w/mae.pth"},
                   adpe_rel={"format": "adpe-rel", "path": "w/adpe.pth", "rpe": "irpe_interp"})
    assert pretrain_run(p, "mae_pub").method == "mae" and pretrain_run(p, "adpe_rel").method == "mae_plus"
    finetune = encoder_run(p, "adpe_rel", "finetune")
    assert finetune.model == VIT_B and finetune.global_pool and finetune.rpe.lookup == "interp"
    assert transfer_run(p, "ade20k", "mae_pub").model.embed_dim == 768
    assert transfer_run(p, "coco", "adpe_rel").rpe.adversary is None  # the adversary is pretraining-only
    assert list(imported_experiments(p, "encoder")) == ["mae_pub", "adpe_rel"]


@pytest.mark.parametrize("entries, extra, match", [
    ({"deit_s": {"format": "deit", "path": "w.pth"}}, {}, "also defined under supervised"),
    ({"pub": {"format": "mjp", "path": "w.pth", "arch": "vit-base"}}, {}, "no mjp release"),
    ({"pub": {"format": "mae", "path": "w.pth", "rpe": "irpe"}}, {}, "adpe-rel only"),
    ({"pub": {"format": "jax", "path": "w.pth"}}, {}, "experiments.imported.pub.format"),
    ({"pub": {"format": "mae", "path": "my weights.pth"}}, {}, "experiments.imported.pub.path"),
    ({"pub": {"format": "mae", "path": "w.pth"}}, {"attacks": {"models": ["pub"]}}, "attacks.models names 'pub'"),
])
def test_bad_published_entries_are_refused_before_any_job(params, entries, extra, match):
    p = copy.deepcopy(params)
    p["experiments"]["imported"] = entries
    for section, values in extra.items():
        p[section].update(values)
    with pytest.raises(ConfigError, match=match):
        validate_params(p)


def test_published_models_join_the_lists_they_are_used_in(params):
    p = copy.deepcopy(params)
    p["experiments"]["imported"] = {"mjp_pub": {"format": "mjp", "path": "w.pth"},
                                    "mae_pub": {"format": "mae", "path": "w.pth"}}
    p["experiments"]["transfer"] = ["mae_pub"]
    p["attacks"]["models"] = ["mjp_pub"]
    p = validate_params(p)
    classifiers, encoders = model_rows(p)
    assert classifiers[-1] == "mjp_pub" and encoders[-1] == "mae_pub"
    assert model_name(p, "mjp_pub") == "mjp pub (published weights, mjp)" and model_name(p, "mjp") == "MJP"


# --- the import the workflow runs -------------------------------------------------------------------------

def test_import_keeps_the_head_rows_of_the_datasets_classes(params, imagenet_classes, tmp_path):
    from vitpe.evaluate.common import load_trained

    reference, state = mjp_layout(TINY_SPEC, num_classes=1000)
    source = _save(tmp_path / "mjp.pth", state, epoch=299)
    p = _tiny_smoke(params, imagenet_classes, mjp_pub={"format": "mjp", "path": str(source)})
    report = import_experiment(p, "mjp_pub", tmp_path / "out")
    model, _ = load_trained(supervised_run(p, "mjp_pub"), report.path, "cpu")
    x = _images(TINY_SPEC)
    with torch.no_grad():  # the dataset's logits are the released model's rows of its classes, in folder order
        torch.testing.assert_close(model(x), reference(x)[:, list(CLASS_INDICES)], atol=1e-6, rtol=0)


def test_import_refuses_another_architecture_or_classes_that_are_no_imagenet_wnids(params, imagenet_classes,
                                                                                   tmp_path):
    _, state = deit_layout(TINY_SPEC, num_classes=1000)
    source = _save(tmp_path / "deit.pth", state)
    entry = {"format": "deit", "path": str(source)}
    tiny = _published(params, "tiny", deit_pub=entry)  # the tiny scale's model is another ViT
    tiny["data"]["embedded"].update(root=str(imagenet_classes), num_classes=len(CLASS_INDICES))
    with pytest.raises(CheckpointError, match=r"deit.pth: holds a ViT of width 32.*the run needs width 64"):
        import_experiment(tiny, "deit_pub", tmp_path / "a")
    p = _tiny_smoke(params, imagenet_classes, deit_pub=entry)
    (imagenet_classes / "imagenet/train/cats").mkdir()
    p["data"]["mini"]["num_classes"] = 4
    with pytest.raises(CheckpointError, match="class folder 'cats' is no ImageNet-1k wnid"):
        import_experiment(p, "deit_pub", tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_encoder_import_checks_the_width_but_not_the_input_size(params, imagenet_classes, tmp_path):
    spec = dataclasses.replace(TINY_SPEC, img_size=16)  # pretrained on smaller crops: fine-tuning resizes the PE
    _, state = encoder_layout(spec, rpe=True, adpe=True)
    source = _save(tmp_path / "adpe.pth", state)
    p = _tiny_smoke(params, imagenet_classes, adpe_pub={"format": "adpe-rel", "path": str(source)})
    report = import_experiment(p, "adpe_pub", tmp_path / "out")
    assert report.path.name == "encoder.safetensors" and report.spec.img_size == 16


# --- the DAG --------------------------------------------------------------------------------------------

def params_smoke() -> dict:
    """The smoke scale as params.yaml writes it (the paper scale's keys it changes)."""
    return yaml.safe_load((ROOT / "params.yaml").read_text())["scales"]["smoke"]


def _workflow(tmp_path: Path, entries: dict, **sections: dict) -> Path:
    tmp_path.mkdir()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["scale"] = "smoke"
    params["experiments"]["imported"] = entries
    for section, values in sections.items():
        params[section].update(values)
    return copy_workflow(tmp_path, params)


def test_dag_imports_published_checkpoints_instead_of_training_them(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    entries = {name: {"format": fmt, "path": str(weights / f"{name}.pth")}
               for name, fmt in (("mjp_pub", "mjp"), ("mae_pub", "mae"))}
    for entry in entries.values():
        Path(entry["path"]).touch()
    cwd = _workflow(tmp_path / "wf", entries, experiments={"transfer": ["mae_pub"]},
                    attacks={"models": ["mjp_pub"], "finetuned": ["mae_pub"], "compare": []})
    dry = run(["snakemake", "-n", "--cores", "2", "results/tables/main.tex"], cwd).stdout
    jobs = dict(line.split() for line in dry[dry.index("Job stats:"):].splitlines()[3:] if len(line.split()) == 2)
    assert jobs["import_classifier"] == jobs["import_encoder"] == "1"
    assert jobs["eval_imported_encoder"] == "2"  # fine-tuned and linear-probed classifiers
    smoke = "results/checkpoints/smoke/seed0"
    assert f"{smoke}/supervised/mjp_pub/model.safetensors" in dry and f"{smoke}/finetune/mae_pub/model.safetensors" in dry
    assert "supervised/mjp_pub/log.jsonl" not in dry and "pretrain/mae_pub/model.safetensors" not in dry
    for target in ("results/metrics/smoke/seed0/mae_pub/coco.json", "results/metrics/smoke/seed0/mjp_pub/attacks.json",
                   "results/metrics/smoke/seed0/mjp_pub/robustness.json"):
        assert target in dry


@pytest.mark.slow
@pytest.mark.paper_size
def test_published_checkpoints_run_through_every_rule_at_the_smoke_scale(tmp_path):
    """One checkpoint of each official layout, at its real shapes, through the rules a user's first
    question needs: the evaluation suite (classify, shuffle, robustness, PE probe) and an attack of the
    classifiers, fine-tuning, linear probing and ADE20K/COCO transfer of the encoders."""
    weights = tmp_path / "weights"
    weights.mkdir()
    deit_tiny = ViTSpec(224, 16, 192, 12, 3, 4.0)
    layouts = {  # DeiT releases at DeiT-Ti keep the 2-core bill down; MAE's are ViT-B at least
        "deit_pub": ("deit", deit_layout(deit_tiny, 1000)[1], "deit-tiny"),
        "mjp_pub": ("mjp", mjp_layout(deit_tiny, 1000)[1], "deit-tiny"),
        "mae_ft_pub": ("mae-finetuned", mae_finetuned_layout(VIT_B, 1000)[1], None),
        "mae_pub": ("mae", encoder_layout(VIT_B)[1], None),
        "adpe_abs_pub": ("adpe-abs", encoder_layout(dataclasses.replace(VIT_B, img_size=112), adpe=True)[1], None),
        "adpe_rel_pub": ("adpe-rel", encoder_layout(dataclasses.replace(VIT_B, img_size=112), rpe=True,
                                                    adpe=True)[1], None),
    }
    entries = {}
    for name, (fmt, state, arch) in layouts.items():
        entries[name] = {"format": fmt, "path": str(_save(weights / f"{name}.pth", state))}
        if arch:
            entries[name]["arch"] = arch
    del layouts
    # one mask at three ratios: the suites' cost is the 224-px images, not the statistics (test_smoke.py
    # runs the default sweep); UperNet's and Mask R-CNN's heads narrowed (the paper's 512-channel UperNet
    # at 512 px is 2 minutes a step on one core): the same code paths, at the paper's input sizes
    smoke = params_smoke()
    narrow = {"transfer.ade20k": {**smoke["transfer.ade20k"], "head_channels": 32, "aux_channels": 16},
              "transfer.coco": {**smoke["transfer.coco"], "head_channels": 32, "fc_channels": 64}}
    classifiers, encoders = ["deit_pub", "mjp_pub", "mae_ft_pub"], ["mae_pub", "adpe_abs_pub", "adpe_rel_pub"]
    cwd = _workflow(tmp_path / "wf", entries, experiments={"transfer": ["mae_pub", "adpe_abs_pub"]},
                    attacks={"models": classifiers, "finetuned": [], "compare": []},
                    evaluation={"shuffle_masks": 1, "shuffle_ratios": [0.0, 0.5, 0.9]},
                    scales={"smoke": {**smoke, **narrow}})
    metrics = Path("results/metrics/smoke/seed0")
    # ADE20K of MAE's encoder and COCO of AdPE's (an iRPE encoder transfers with a recipe change,
    # README: Downstream transfer)
    targets = ([metrics / name / kind for name in classifiers for kind in ("robustness.json", "attacks.json")]
               + [metrics / name / "finetune.json" for name in encoders] + [metrics / "mae_pub/linprobe.json"]
               + [metrics / "mae_pub/ade20k.json", metrics / "adpe_abs_pub/coco.json"])
    run(["snakemake", "--cores", "2", *map(str, targets), "--resources", "mem_mb=20000"], cwd, timeout=2400)

    def read(name: str, kind: str) -> dict:
        return json.loads((cwd / metrics / name / f"{kind}.json").read_text())

    for name in classifiers:
        assert 0.0 <= read(name, "classify")["top1"] <= 100.0 and read(name, "classify")["num_images"] == 8
        assert read(name, "robustness")["mce"] > 0 and "shuffled_top1_r0.90" in read(name, "shuffle")
        assert read(name, "attacks")["scale"] == "smoke"
    assert read("mjp_pub", "pe_probe")["abs_2d_mae"] >= 0  # the released table's 196 rows, probed
    for name in encoders:
        assert 0.0 <= read(name, "finetune")["top1"] <= 100.0 and read(name, "finetune")["num_images"] == 8
    assert 0.0 <= read("mae_pub", "linprobe")["top1"] <= 100.0
    assert 0.0 <= read("mae_pub", "ade20k")["ade20k_miou"] <= 100.0 and read("mae_pub", "ade20k")["ade20k_iters"] == 2
    assert 0.0 <= read("adpe_abs_pub", "coco")["coco_ap_box"] <= 1.0 and read("adpe_abs_pub", "coco")["coco_iters"] == 2
    logs = (cwd / "results/logs/smoke/seed0/imported/mjp_pub.log").read_text()
    assert "mjp: width 192, depth 12, 3 heads, 224 px" in logs


def test_published_releases_of_the_papers_models_are_compared_with_the_paper_numbers(params, tmp_path):
    from test_report import PAPER, _metrics, _study_row
    from vitpe.report.tables import build_main_tex, paper_row

    p = _published(params, "paper", deit_released={"format": "deit", "path": "w.pth"},
                   deit_tiny={"format": "deit", "path": "w.pth", "arch": "deit-tiny"},
                   mae_released={"format": "mae", "path": "w.pth"}, adpe_released={"format": "adpe-abs", "path": "w.pth"})
    assert [paper_row(p, row) for row in ("deit_released", "deit_tiny", "mae_released")] == ["deit_s", None, "mae"]
    assert paper_row(p, "adpe_released", "transfer") == "adpe" and paper_row(p, "adpe_released", "adpe") is None
    _metrics(tmp_path, "paper", 80.4, 94.7)
    for name, top1 in (("deit_released", 79.8), ("deit_tiny", 72.2)):
        (tmp_path / "paper/seed0" / name).mkdir()
        for kind, values in (("classify", {"top1": top1, "top5": 95.1}), ("shuffle", {}), ("robustness", {}),
                             ("pe_probe", {})):
            (tmp_path / "paper/seed0" / name / f"{kind}.json").write_text(json.dumps(values))
    for name in ("mae_released", "adpe_released"):
        (tmp_path / "paper/seed0" / name).mkdir()
        for kind in ("finetune", "linprobe"):
            (tmp_path / "paper/seed0" / name / f"{kind}.json").write_text(json.dumps({"top1": 83.5, "top5": 96.0}))
    tex = build_main_tex(p, tmp_path, PAPER)
    released = "deit released (published weights, deit)"
    assert _study_row(tex, "MJP study: supervised", released) == [released, "paper", "79.8", "79.9", "-0.1",
                                                                     "95.1", "95.0", "+0.1"]
    tiny = "deit tiny (published weights, deit)"  # DeiT-Ti: no paper number of DeiT-S beside it
    assert _study_row(tex, "MJP study: supervised", tiny)[2:5] == ["72.2", "", ""]
    mae = "mae released (published weights, mae)"
    assert _study_row(tex, "AdPE study", mae)[2:5] == ["83.5", "83.6", "-0.1"]
    from vitpe.report.headline import headline_metrics

    p["attacks"].update(models=[], april_models=[], finetuned=[])  # no attack metrics written above
    headline = headline_metrics(p, tmp_path)  # a published encoder's row has no pretext numbers
    assert headline["pretrain"]["mae_released"] == {"finetune_top1": 83.5, "linprobe_top1": 83.5}
    assert headline["supervised"]["deit_released"]["top1"] == 79.8
