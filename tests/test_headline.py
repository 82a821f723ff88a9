"""What DVC tracks: the curated headline metrics (results/metrics/<scale>/headline.json) and the plot
definitions of dvc.yaml, checked on the committed tiny baseline."""
from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest
import yaml

from conftest import ROOT, run
from vitpe.config import load_params
from vitpe.report.figures import training_curves
from vitpe.report.headline import count_values, headline_metrics
from vitpe.report.names import experiment_name

PARAMS = load_params(ROOT / "params.yaml")
METRICS = ROOT / "results/metrics"
TINY = METRICS / "tiny"
DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())


def _flat(tree: dict, prefix: str = "") -> dict[str, float]:
    """DVC's view of a nested metrics file: ``a.b.c`` keys."""
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def _detail(exp: str, source: str, key: str) -> float:
    return json.loads((TINY / exp / f"{source}.json").read_text())[key]


@pytest.fixture(scope="module")
def headline() -> dict[str, float]:
    return _flat(headline_metrics({**PARAMS, "scale": "tiny"}, METRICS))


def test_headline_values_are_the_detailed_ones_in_one_unit_convention(headline):
    # percent stays percent, fractions become percent, dB stays dB; rounded to 0.01 (a table digit finer)
    assert headline["supervised.mjp.top1"] == round(_detail("mjp", "classify", "top1"), 2)
    assert headline["supervised.deit_s.consistency_agreement"] == round(
        100 * _detail("deit_s", "shuffle", "consistency_agreement"), 2)
    assert headline["supervised.naive_shuffle.shuffled_top1_r0_50"] == round(
        _detail("naive_shuffle", "shuffle", "shuffled_top1_r0.50"), 2)
    assert headline["transfer.mae.coco_ap50_box"] == round(100 * _detail("mae", "coco", "coco_ap50_box"), 2)
    assert headline["transfer.adpe_abs_coordinate.ade20k_miou"] == round(
        _detail("adpe_abs_coordinate", "ade20k", "ade20k_miou"), 2)
    assert headline["privacy.mjp.pe_gradient_adaptive_shuffled_psnr_kept_mean"] == round(
        _detail("mjp", "attacks", "pe_gradient_adaptive_shuffled_psnr_kept_mean"), 2)
    assert headline["privacy.mjp.inverting_gradients_shuffled_pos_acc_mean"] == round(
        100 * _detail("mjp", "attacks", "inverting_gradients_shuffled_pos_acc_mean"), 2)
    assert headline["pretrain.adpe_abs_coordinate.val_loss"] == round(
        _detail("adpe_abs_coordinate", "pretext", "val_loss"), 4)
    # ‖δ‖ only where there is an adversary
    assert "pretrain.adpe_abs_coordinate.final_adv_l2" in headline and "pretrain.mae.final_adv_l2" not in headline
    # no float noise survives: every value has at most 4 decimals
    assert all(round(v, 4) == v for v in headline.values())


def test_headline_is_small_and_holds_no_timing(headline):
    assert 100 <= len(headline) <= 150  # the detailed files hold thousands
    assert not [k for k in headline if re.search(r"second|time|_s$|duration|wall|per_s", k)]
    # the detailed files do hold timings (what the headline leaves out)
    assert "gradvit_plain_seconds_mean" in json.loads((TINY / "mjp/attacks.json").read_text())


def test_committed_headline_is_built_from_the_committed_details(headline):
    committed = json.loads((TINY / "headline.json").read_text())
    assert _flat(committed) == headline and count_values(committed) == len(headline)


def _scaled(value):
    return value * 0.5 + 1.0 if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def test_a_change_in_one_model_changes_only_its_headline_keys(tmp_path, headline):
    # what `dvc exp run -S supervised.mjp.jigsaw.ratio=0.3` does: only MJP's metrics files change
    shutil.copytree(TINY, tmp_path / "tiny")
    for path in (tmp_path / "tiny/mjp").glob("*.json"):
        detail = json.loads(path.read_text())
        path.write_text(json.dumps({key: _scaled(value) for key, value in detail.items()}))
    changed = _flat(headline_metrics({**PARAMS, "scale": "tiny"}, tmp_path))
    assert changed.keys() == headline.keys()
    differ = {key for key in headline if changed[key] != headline[key]}
    assert differ == {key for key in headline if key.split(".")[1] == "mjp"}
    assert {key.split(".")[0] for key in differ} == {"supervised", "privacy"}


def test_missing_metrics_file_is_one_line_and_no_output(tmp_path):
    out = tmp_path / "headline.json"
    proc = run(["vitpe", "report", "headline", "--params", str(ROOT / "params.yaml"), "--metrics",
                str(tmp_path / "none"), "--out", str(out)], ROOT, check=False)
    assert proc.returncode != 0 and not out.exists()
    assert proc.stderr.strip() == f"error: {tmp_path}/none/tiny/deit_s/classify.json: metrics file not found"


def test_dvc_tracks_only_the_headline_and_plots_name_no_experiment():
    stage = DVC_YAML["stages"]["workflow"]
    assert "metrics" not in stage and DVC_YAML["metrics"] == ["results/metrics/${scale}/headline.json"]
    outs = {next(iter(out)) if isinstance(out, dict) else out: out for out in stage["outs"]}
    # the detailed JSONs and the plot data stay persisted, git-tracked outputs
    for path in ("results/metrics", "results/plots"):
        assert outs[path][path] == {"persist": True, "cache": False}
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


def test_curve_data_is_long_format_with_display_names(tmp_path):
    logs = []
    for exp, losses in (("deit_s", [2.5, 2.0]), ("mjp", [2.7, 1.9, 1.5])):
        log = tmp_path / exp / "log.jsonl"
        log.parent.mkdir()
        log.write_text("".join(json.dumps({"step": i + 1, "loss": v, "lr": 1e-3}) + "\n" for i, v in enumerate(losses)))
        logs.append(log)
    csv = tmp_path / "curves.csv"
    training_curves(logs, [tmp_path / "curves.png", csv])
    frame = pd.read_csv(csv)
    assert list(frame.columns) == ["step", "model", "loss"]
    assert frame.groupby("model")["loss"].apply(list).to_dict() == {
        experiment_name("deit_s"): [2.5, 2.0], experiment_name("mjp"): [2.7, 1.9, 1.5]}
    assert frame["step"].tolist() == [1, 2, 1, 2, 3]
