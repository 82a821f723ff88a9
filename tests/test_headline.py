"""What DVC tracks: the curated headline metrics (results/metrics/<scale>/headline.json) and the plot
definitions of dvc.yaml, checked on a three-seed tree derived from the committed tiny baseline."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT, run
from vitpe.config import load_params, scale_seeds
from vitpe.report.figures import training_curves
from vitpe.report.headline import count_values, headline_metrics
from vitpe.report.names import experiment_name

PARAMS = load_params(ROOT / "params.yaml")
METRICS = ROOT / "results/metrics"
TINY = METRICS / "tiny"
SEEDS = scale_seeds({**PARAMS, "scale": "tiny"})
BASELINE = TINY / "seed0"  # the committed seed-0 metrics
DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())


def _flat(tree: dict, prefix: str = "") -> dict[str, float]:
    """DVC's view of a nested metrics file: ``a.b.c`` keys."""
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def _seed_value(value, seed: int):
    """Seed N's copy of a baseline number: 1 % larger per seed (mean +1 %, sample std 1 % of it)."""
    return value * (1 + 0.01 * seed) if isinstance(value, float) else value


def _baseline_folders() -> dict[str, object]:
    """Each configured experiment's committed metrics folder; one configured after the baseline was
    committed borrows the folder of the first model of its list (the same metric files)."""
    experiments = PARAMS["experiments"]
    attacks = PARAMS["attacks"]
    folders = {}
    for listed in (experiments["supervised"], experiments["pretrain"], attacks["april_models"]):
        for exp in listed:
            folders[exp] = BASELINE / exp if (BASELINE / exp).is_dir() else BASELINE / listed[0]
    return folders


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """results/metrics with one folder per tiny seed, derived from the committed baseline."""
    root = tmp_path_factory.mktemp("metrics")
    for exp, folder in _baseline_folders().items():
        for path in folder.glob("*.json"):
            detail = json.loads(path.read_text())
            for seed in SEEDS:
                out = root / "tiny" / f"seed{seed}" / exp / path.name
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps({k: _seed_value(v, seed) for k, v in detail.items()}))
    return root


def _detail(root, exp: str, source: str, key: str) -> list[float]:
    return [json.loads((root / "tiny" / f"seed{s}" / exp / f"{source}.json").read_text())[key] for s in SEEDS]


@pytest.fixture(scope="module")
def headline(seeded) -> dict[str, float]:
    return _flat(headline_metrics({**PARAMS, "scale": "tiny"}, seeded))


def test_headline_values_are_the_seed_means_in_one_unit_convention(headline, seeded):
    # percent stays percent, fractions become percent, dB stays dB; rounded to 0.01 (a table digit finer)
    def mean(exp, source, key, factor=1.0, digits=2):
        return round(float(np.mean(_detail(seeded, exp, source, key))) * factor, digits)

    def std(exp, source, key, factor=1.0, digits=2):
        return round(float(np.std(np.multiply(_detail(seeded, exp, source, key), factor), ddof=1)), digits)

    assert headline["supervised.mjp.top1"] == mean("mjp", "classify", "top1")
    assert headline["supervised.mjp.top1_std"] == std("mjp", "classify", "top1")
    assert headline["supervised.deit_s.consistency_agreement"] == mean(
        "deit_s", "shuffle", "consistency_agreement", 100)
    assert headline["supervised.deit_s.consistency_agreement_std"] == std(
        "deit_s", "shuffle", "consistency_agreement", 100) > 0
    assert headline["supervised.naive_shuffle.shuffled_top1_r0_50"] == mean("naive_shuffle", "shuffle",
                                                                            "shuffled_top1_r0.50")
    assert headline["transfer.mae.coco_ap50_box"] == mean("mae", "coco", "coco_ap50_box", 100)
    assert headline["transfer.adpe_abs_coordinate.ade20k_miou"] == mean("adpe_abs_coordinate", "ade20k", "ade20k_miou")
    assert headline["privacy.mjp.pe_gradient_adaptive_shuffled_psnr_kept_mean"] == mean(
        "mjp", "attacks", "pe_gradient_adaptive_shuffled_psnr_kept_mean")
    assert headline["privacy.mjp.inverting_gradients_shuffled_pos_acc_mean"] == mean(
        "mjp", "attacks", "inverting_gradients_shuffled_pos_acc_mean", 100)
    assert headline["pretrain.adpe_abs_coordinate.val_loss"] == mean("adpe_abs_coordinate", "pretext", "val_loss",
                                                                     digits=4)
    # ‖δ‖ only where there is an adversary
    assert "pretrain.adpe_abs_coordinate.final_adv_l2" in headline and "pretrain.mae.final_adv_l2" not in headline
    # every mean has its std, and no float noise survives: every value has at most 4 decimals
    means = [k for k in headline if not k.endswith("_std")]
    assert all(f"{k}_std" in headline for k in means) and len(headline) == 2 * len(means)
    assert all(round(v, 4) == v for v in headline.values())


def test_one_seed_has_no_std(seeded):
    params = {**PARAMS, "scale": "tiny", "scales": {**PARAMS["scales"], "tiny": {**PARAMS["scales"]["tiny"],
                                                                               "seeds": [0]}}}
    single = _flat(headline_metrics(params, seeded))
    assert single and not [k for k in single if k.endswith("_std")]
    assert single["supervised.mjp.top1"] == round(_detail(seeded, "mjp", "classify", "top1")[0], 2)


def test_headline_is_small_and_holds_no_timing(headline, seeded):
    assert 200 <= len(headline) <= 300  # about 150 means and their stds; the detailed files hold thousands
    assert not [k for k in headline if k.endswith(("_ssim_mean", "mce_unnorm_15", "adaptive_plain_psnr_mean"))]
    assert not [k for k in headline if re.search(r"second|time|_s$|duration|wall|per_s", k)]
    # the detailed files do hold timings (what the headline leaves out)
    assert "gradvit_plain_seconds_mean" in json.loads((seeded / "tiny/seed0/mjp/attacks.json").read_text())


def test_committed_headline_is_built_from_the_committed_details():
    committed = json.loads((TINY / "headline.json").read_text())
    rebuilt = _flat(headline_metrics({**PARAMS, "scale": "tiny"}, METRICS))
    assert _flat(committed) == rebuilt and count_values(committed) == len(rebuilt)


def _scaled(value):
    return value * 0.5 + 1.0 if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def test_a_change_in_one_model_changes_only_its_headline_keys(tmp_path, headline, seeded):
    # what `dvc exp run -S supervised.mjp.dal.weight=0.02` does: only MJP's metrics files change
    shutil.copytree(seeded / "tiny", tmp_path / "tiny")
    for path in (tmp_path / "tiny").glob("seed*/mjp/*.json"):
        detail = json.loads(path.read_text())
        path.write_text(json.dumps({key: _scaled(value) for key, value in detail.items()}))
    changed = _flat(headline_metrics({**PARAMS, "scale": "tiny"}, tmp_path))
    assert changed.keys() == headline.keys()
    differ = {key for key in headline if changed[key] != headline[key]}
    mjp = {key for key in headline if key.split(".")[1] == "mjp"}
    # every MJP mean moves (a std of 0, e.g. a metric at 0 in every seed, stays 0)
    assert differ <= mjp and {k for k in mjp if not k.endswith("_std")} <= differ
    assert {key.split(".")[0] for key in differ} == {"supervised", "privacy"}


def test_missing_metrics_file_is_one_line_and_no_output(tmp_path):
    out = tmp_path / "headline.json"
    proc = run(["vitpe", "report", "headline", "--params", str(ROOT / "params.yaml"), "--metrics",
                str(tmp_path / "none"), "--out", str(out)], ROOT, check=False)
    assert proc.returncode != 0 and not out.exists()
    assert proc.stderr.strip() == f"error: {tmp_path}/none/tiny/seed0/deit_s/classify.json: metrics file not found"


def test_dvc_tracks_only_the_headline_and_plots_name_no_experiment():
    stages = DVC_YAML["stages"]
    assert not any("metrics" in stage for stage in stages.values())
    assert DVC_YAML["metrics"] == ["results/metrics/${scale}/headline.json"]
    # the detailed JSONs and the plot data stay outputs, in git rather than the DVC cache
    outs = {path: spec for stage in stages.values() for out in stage["outs"] if isinstance(out, dict)
            for path, spec in out.items()}
    assert outs["results/metrics/tiny/seed0/deit_s/classify.json"] == {"cache": False}
    assert outs["results/plots/tiny/training_curves.csv"] == {"cache": False}
    experiments = set(PARAMS["supervised"]) | set(PARAMS["pretrain"])
    for plot in DVC_YAML["plots"]:
        (title, spec), = plot.items()
        assert spec["template"] == "runs" and spec["x_label"] and spec["y_label"]
        (path, field), = spec["y"].items()
        assert path.startswith("results/plots/${scale}/") and field == "loss"
        words = set(re.findall(r"\w+", yaml.safe_dump(plot)))
        assert not words & experiments, f"plot {title!r} names experiments {words & experiments}"
    template = json.loads((ROOT / ".dvc/plots/runs.json").read_text())
    assert template["encoding"]["color"]["field"] == "model"  # one colour per run, whatever `experiments` lists


def test_curve_data_is_long_format_with_display_names(tmp_path, monkeypatch):
    logs = []
    for exp, losses in (("deit_s", [2.5, 2.0]), ("mjp", [2.7, 1.9, 1.5])):
        log = tmp_path / exp / "log.jsonl"
        log.parent.mkdir()
        log.write_text("".join(json.dumps({"step": i + 1, "epoch": 0, "loss": v, "lr": 1e-3}) + "\n"
                               for i, v in enumerate(losses)))
        logs.append(log)
    with logs[1].open("a") as f:  # the engine's per-epoch validation record, in the same log
        f.write(json.dumps({"step": 3, "epoch": 0, "validation": {"top1": 62.5, "top5": 90.0}}) + "\n")
    drawn = []
    monkeypatch.setattr("vitpe.report.figures.save_figure", lambda fig, outputs: drawn.append(fig))
    csv = tmp_path / "curves.csv"
    training_curves(logs, [tmp_path / "curves.png", csv])
    validation = drawn[0].axes[2]  # loss, schedule, validation top-1 per epoch
    assert validation.get_ylabel() == "validation top-1 (%)"
    assert [list(line.get_xydata()[:, 1]) for line in validation.get_lines()] == [[62.5]]
    frame = pd.read_csv(csv)
    assert list(frame.columns) == ["step", "model", "loss"]
    assert frame.groupby("model")["loss"].apply(list).to_dict() == {
        experiment_name("deit_s"): [2.5, 2.0], experiment_name("mjp"): [2.7, 1.9, 1.5]}
    assert frame["step"].tolist() == [1, 2, 1, 2, 3]
