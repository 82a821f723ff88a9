"""`vitpe attack ...` end to end on micro models: run (optimisation and closed form), compare,
figures and the privacy block of main.tex; skipped optional inputs are recorded, not fatal."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import BIN, ROOT, make_image_folder, micro_params_file, run
from vitpe.attacks.runner import attack_settings
from vitpe.cli import main
from vitpe.config import load_params, supervised_run
from vitpe.errors import ConfigError
from vitpe.report.tables import privacy_tables
from vitpe.train.checkpoint import save_weights
from vitpe.train.supervised import build_model

OVERRIDES = ['attacks={"gradvit": {"image_prior": "missing/moco_v2_r50.pth"}, '
             '"metrics": {"lpips_alexnet": "missing/alexnet-owt-7be5be79.pth", "bootstrap": 200}}']


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("attacks")
    data = tmp / "data"
    make_image_folder(data / "imagenet", train_per_class=1, val_per_class=1)
    for i, cls in enumerate(("c01", "c04", "c07")):  # the attack set: photographs of some classes
        (data / "attack" / cls).mkdir(parents=True)
        src = next((data / "imagenet" / "val" / cls).iterdir())
        Image.open(src).save(data / "attack" / cls / f"photo{i}.png")
    params_file = micro_params_file(tmp, data)
    params = load_params(params_file, OVERRIDES)
    weights = {}
    for exp in ("deit_s", "mjp", "mjp_april"):
        path = tmp / "ckpt" / exp / "model.safetensors"
        save_weights(build_model(supervised_run(params, exp)), path)
        weights[exp] = path
    return tmp, params_file, params, weights


def _attack(tmp, params_file, weights, exp, kind):
    out = tmp / "metrics" / "tiny" / exp / "attacks.json"
    table, recon = tmp / "attacks" / exp / "images.csv", tmp / "attacks" / exp / "reconstructions.safetensors"
    argv = ["attack", "run", "--params", str(params_file), *sum((["--set", o] for o in OVERRIDES), []),
            "--experiment", exp, "--kind", kind, "--weights", str(weights[exp]), "--out", str(out),
            "--table", str(table), "--recon", str(recon), "--images", "2", "--iterations", "3", "--device", "cpu"]
    assert main(argv) == 0
    return json.loads(out.read_text()), pd.read_csv(table)


def test_attack_run_records_threat_model_and_skips(setup):
    tmp, params_file, _, weights = setup
    metrics, table = _attack(tmp, params_file, weights, "mjp", "supervised")
    assert metrics["gradvit_image_prior"] == "skipped" and "moco_v2_r50.pth" in metrics["gradvit_image_prior_reason"]
    assert metrics["gradvit_variant"] == "GradViT w/o image prior"
    assert metrics["lpips"] == "skipped" and "alexnet-owt-7be5be79.pth" in metrics["lpips_reason"]
    threat = (metrics["threat_batch_size"], metrics["threat_labels"], metrics["threat_model_mode"])
    assert threat == (1, "recovered", "eval")
    assert metrics["ig_iterations"] == 3 and metrics["num_images"] == 2 and metrics["threat_dal_weight"] == 0.01
    assert metrics["inverting_gradients_plain_images"] == 2 and 0 <= metrics["clean_top1"] <= 100
    # 2 images x 2 client modes x 2 attacks, each with every metric
    assert len(table) == 8 and set(table["attack"]) == {"inverting_gradients", "gradvit"}
    assert table[["psnr", "ssim", "fft2d", "psnr_fed", "pos_acc"]].notna().all().all()
    assert "lpips" not in table
    shuffled = table[table["mode"] == "shuffled"]
    # the MJP client's unknown-PE positions are what the attacker detects (zero PE-gradient rows)
    assert (shuffled["n_detected"] == shuffled["n_shuffled"]).all()
    assert table[table["mode"] == "plain"]["psnr_shuffled"].isna().all()
    for key, value in metrics.items():
        assert isinstance(value, (int, float, str)), key


def test_closed_form_run_compare_figures_and_table(setup):
    tmp, params_file, params, weights = setup
    metrics, table = _attack(tmp, params_file, weights, "mjp_april", "april")
    assert set(table["attack"]) == {"april", "april_adaptive"} and metrics["april_known_cls"] == "true"
    _attack(tmp, params_file, weights, "deit_s", "supervised")
    tables = [str(tmp / "attacks" / e / "images.csv") for e in ("deit_s", "mjp", "mjp_april")]
    paired = tmp / "metrics" / "tiny" / "attacks" / "paired.json"
    assert main(["attack", "compare", "--params", str(params_file), *sum((["--set", o] for o in OVERRIDES), []),
                 "--tables", *tables, "--out", str(paired)]) == 0
    values = json.loads(paired.read_text())
    assert values["deit_s_vs_mjp_inverting_gradients_plain_psnr_diff_n"] == 2
    a = pd.read_csv(tables[0]).set_index(["attack", "mode", "image"])["psnr"]
    b = pd.read_csv(tables[1]).set_index(["attack", "mode", "image"])["psnr"]
    diff = (a - b).sort_index().loc["gradvit", "shuffled"]
    assert values["deit_s_vs_mjp_gradvit_shuffled_psnr_diff_mean"] == pytest.approx(diff.mean())

    for name, recon, attacks in (("grid", ["deit_s", "mjp"], ["inverting_gradients"]),
                                 ("april", ["mjp_april"], ["april", "april_adaptive"])):
        outs = [tmp / "fig" / f"{name}.png", tmp / "fig" / f"{name}.pdf"]
        assert main(["attack", "grid-figure", "--recon",
                     *[str(tmp / "attacks" / e / "reconstructions.safetensors") for e in recon],
                     "--attacks", *attacks, "--out", *map(str, outs)]) == 0
        assert outs[0].read_bytes()[:4] == b"\x89PNG" and outs[1].read_bytes()[:4] == b"%PDF"
    outs = [tmp / "fig" / "psnr.png"]
    assert main(["attack", "psnr-figure", "--tables", *tables, "--out", str(outs[0])]) == 0
    assert outs[0].read_bytes()[:4] == b"\x89PNG"

    # the privacy block, for the models attacked here (the paired table shows DeiT-S vs MJP)
    view = {**params, "attacks": {**params["attacks"], "models": ["deit_s", "mjp"], "finetuned": [],
                                  "april_models": ["mjp_april"], "compare": [["deit_s", "mjp"]]}}
    tex = "\n".join(privacy_tables(view, tmp / "metrics" / "tiny", "tiny", {}))
    assert "tab:privacy" in tex and "tab:privacy-april" in tex and "tab:privacy-paired" in tex
    mean = values["deit_s_vs_mjp_inverting_gradients_plain_psnr_diff_mean"]
    row = next(line for line in tex.splitlines() if line.startswith("DeiT-S - MJP & IG & plain"))
    assert f"{mean:+.2f}" in row and re.search(r"\[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]", row)
    # no attack metrics at all: no privacy block (a workflow without the attack rules)
    assert privacy_tables(view, tmp / "nothing", "tiny", {}) == []


def test_small_batches_match_reconstructions_and_skip_the_closed_form(setup, tmp_path):
    tmp, params_file, _, weights = setup
    batch = ['attacks={"threat": {"batch_size": 2}}']
    common = ["--params", str(params_file), "--set", batch[0], "--images", "2", "--iterations", "2"]
    for exp, kind in (("deit_s", "supervised"), ("mjp_april", "april")):
        out = tmp_path / f"{exp}.json"
        assert main(["attack", "run", *common, "--experiment", exp, "--kind", kind, "--weights", str(weights[exp]),
                     "--out", str(out), "--table", str(tmp_path / f"{exp}.csv"),
                     "--recon", str(tmp_path / f"{exp}.safetensors")]) == 0
        metrics = json.loads(out.read_text())
        assert metrics["threat_batch_size"] == 2
    assert metrics["april_skipped"].startswith("needs batch size 1")  # the APRIL model: nothing to run
    table = pd.read_csv(tmp_path / "deit_s.csv")
    assert len(table) == 8 and table["label_ok"].isin([0.0, 1.0]).all()


def test_finetuned_classifier_is_attacked_generically(setup):
    from vitpe.config import encoder_run

    tmp, params_file, params, weights = setup
    path = tmp / "ckpt" / "mae" / "model.safetensors"
    save_weights(build_model(encoder_run(params, "mae", "finetune")), path)  # global-pool MAE classifier
    metrics, table = _attack(tmp, params_file, {"mae": path}, "mae", "finetuned")
    assert metrics["kind"] == "finetuned" and metrics["threat_dal_weight"] == 0.0 and len(table) == 8
    assert (table["n_detected"] == 0).all()  # no unknown PE: nothing to detect in either client mode


def test_attack_settings_validate_names(setup):
    _, _, params, _ = setup
    settings = attack_settings(params)
    assert settings.ig.iterations == params["scales"]["tiny"]["attacks"]["iterations"]["inverting_gradients"]
    assert settings.attacks_for("april") == ("april", "april_adaptive")
    bad = {**params, "attacks": {**params["attacks"], "april_models": ["deit_s"]}}
    with pytest.raises(ConfigError, match="not APRIL-compatible"):
        attack_settings(bad)


def test_params_wire_the_april_variants_and_the_schema_refuses_unknown_keys(tmp_path):
    params = load_params(ROOT / "params.yaml")
    assert supervised_run(params, "mjp_april").first_block == "april"
    assert supervised_run(params, "mjp").first_block == "standard"
    assert set(params["attacks"]["april_models"]).isdisjoint(params["experiments"]["supervised"])
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["attacks"]["threat"]["labels"] = "guessed"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="attacks.threat.labels"):
        load_params(path)


def test_workflow_attacks_every_model(workflow_copy):
    """The DAG plans one attack job per attacked model (fine-tuned ones only for built pretraining
    experiments), the comparison and the three figures, all feeding main.tex."""
    proc = run([str(BIN / "snakemake"), "-n", "results/tables/main.tex"], workflow_copy)
    counts = {line.split()[0]: int(line.split()[1]) for line in proc.stdout.splitlines()
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    params = load_params(workflow_copy / "params.yaml")
    cfg = params["attacks"]
    finetuned = [e for e in cfg["finetuned"] if e in params["experiments"].get("pretrain", [])]
    assert counts["attack_model"] == len(cfg["models"]) + len(cfg["april_models"]) + len(finetuned)
    assert counts["attack_compare"] == counts["figure_attack_grid"] == counts["figure_attack_grid_april"] == 1
    assert counts["figure_attack_psnr"] == 1
    bad = run([str(BIN / "snakemake"), "-n", "--config", "attacks={\"april_models\": [\"deit_s\"]}"],
              workflow_copy, check=False)
    assert bad.returncode != 0 and "not APRIL-compatible" in bad.stderr + bad.stdout
