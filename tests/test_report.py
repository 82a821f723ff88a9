"""results/tables/main.tex: run values, sourced paper values, deltas only at the paper scale."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from conftest import ROOT
from test_citations import DEAD_CITATION
from vitpe.config import apply_overrides, load_params
from vitpe.errors import DataError
from vitpe.report.tables import build_main_tex

PAPER = ROOT / "workflow/resources/paper_numbers.yaml"


EXPERIMENTS = load_params(ROOT / "params.yaml")["experiments"]["supervised"]
OTHER = {  # what the MJP evaluations write (a subset of their keys)
    "shuffle": {"shuffled_top1_r0.50": 12.5, "consistency_agreement": 0.875, "consistency_l2": 0.12345},
    "robustness": {"mce": 91.23, "mce_unnorm_15": 70.0, "a_top1": 5.0, "o_aupr": 33.3},
    "pe_probe": {"status": "skipped", "reason": "no table"},
}


PRETRAIN = load_params(ROOT / "params.yaml")["experiments"]["pretrain"]
TRANSFER = load_params(ROOT / "params.yaml")["experiments"]["transfer"]  # test_transfer.py has its own


def _metrics(root, scale, top1, top5):
    for exp in EXPERIMENTS:
        folder = root / scale / exp
        folder.mkdir(parents=True)
        (folder / "classify.json").write_text(json.dumps({"top1": top1, "top5": top5}))
        for name, values in OTHER.items():
            (folder / f"{name}.json").write_text(json.dumps(values))
    for i, exp in enumerate(PRETRAIN):  # what the AdPE stages write
        folder = root / scale / exp
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "finetune.json").write_text(json.dumps({"top1": top1 + i, "top5": top5}))
        (folder / "linprobe.json").write_text(json.dumps({"top1": top1 - 10, "top5": top5}))
        pretext = {"val_loss": 0.5 + i / 100} | ({"final_adv_l2": 0.99} if exp.startswith("adpe") else {})
        (folder / "pretext.json").write_text(json.dumps(pretext))
    for exp in TRANSFER:  # what the transfer rules write
        (root / scale / exp / "ade20k.json").write_text(json.dumps({"ade20k_miou": 40.0, "ade20k_aacc": 80.0}))
        (root / scale / exp / "coco.json").write_text(json.dumps({"coco_ap_box": 0.4, "coco_ap_mask": 0.35}))


def test_tiny_table_prints_run_and_paper_values_without_delta(tmp_path):
    _metrics(tmp_path, "tiny", 41.25, 88.0)
    tex = build_main_tex(load_params(ROOT / "params.yaml"), tmp_path, PAPER)
    row = next(line for line in tex.splitlines() if line.startswith("DeiT-S"))
    cells = [c.strip().rstrip("\\").strip() for c in row.split("&")]
    assert cells == ["DeiT-S", "tiny", "41.2", "79.9", "", "88.0", "95.0", ""]
    assert "\\toprule" in tex and "\\bottomrule" in tex and "deit\\_small\\_patch16\\_224" in tex


def test_robustness_table_prints_run_values_only(tmp_path):
    _metrics(tmp_path, "tiny", 41.25, 88.0)
    tex = build_main_tex(load_params(ROOT / "params.yaml"), tmp_path, PAPER)
    robustness = tex[tex.index("robustness and position information"):]
    row = next(line for line in robustness.splitlines() if line.startswith("MJP"))
    cells = [c.strip().rstrip("\\").strip() for c in row.split("&")]
    # shuffled top-1, agreement in percent, L2 with 3 digits, mCE x2, A, O, probe skipped -> empty
    assert cells == ["MJP", "tiny", "12.5", "87.5", "0.123", "91.2", "70.0", "5.0", "33.3", ""]
    assert "(paper)" not in robustness.split("\\end{table}")[0]  # nothing sourced: no paper columns


def test_adpe_table_prints_finetune_linprobe_and_the_readme_values(tmp_path):
    _metrics(tmp_path, "paper", 80.0, 90.0)
    params = apply_overrides(load_params(ROOT / "params.yaml"), ["scale=paper"])
    params["experiments"] = {**params["experiments"], "transfer": []}  # the AdPE block alone
    adpe = build_main_tex(params, tmp_path, PAPER)
    adpe = adpe[adpe.index("AdPE study"):]
    rows = {line.split("&")[0].strip(): [c.strip().rstrip("\\").strip() for c in line.split("&")]
            for line in adpe.splitlines() if "&" in line and "paper" in line}
    i = PRETRAIN.index("adpe_rel_coordinate")
    # fine-tune (run, paper, delta), linear probe (run, paper, delta), val loss, |delta|
    assert rows["AdPE RPE, coordinate"] == ["AdPE RPE, coordinate", "paper", f"{80.0 + i:.1f}", "84.4",
                                             f"{80.0 + i - 84.4:+.1f}", "70.0", "", "", f"{0.5 + i / 100:.3f}",
                                             "0.990"]
    assert rows["MAE"][2:7] == ["80.0", "83.6", "-3.6", "70.0", "68.0"]


def test_paper_table_prints_signed_delta(tmp_path):
    _metrics(tmp_path, "paper", 80.4, 94.7)
    params = apply_overrides(load_params(ROOT / "params.yaml"), ["scale=paper"])
    row = next(line for line in build_main_tex(params, tmp_path, PAPER).splitlines() if line.startswith("DeiT-S"))
    cells = [c.strip().rstrip("\\").strip() for c in row.split("&")]
    assert cells == ["DeiT-S", "paper", "80.4", "79.9", "+0.5", "94.7", "95.0", "-0.3"]


def test_missing_or_broken_metrics_name_the_file(tmp_path):
    params = load_params(ROOT / "params.yaml")
    with pytest.raises(DataError, match="classify.json: metrics file not found"):
        build_main_tex(params, tmp_path, PAPER)
    _metrics(tmp_path, "tiny", 1.0, 2.0)
    (tmp_path / "tiny/deit_s/classify.json").write_text("{not json")
    with pytest.raises(DataError, match="classify.json: not valid JSON"):
        build_main_tex(params, tmp_path, PAPER)


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed (.ci/run installs it)")
def test_table_compiles_with_pdflatex(tmp_path):
    _metrics(tmp_path, "tiny", 41.25, 88.0)
    (tmp_path / "main.tex").write_text(build_main_tex(load_params(ROOT / "params.yaml"), tmp_path, PAPER))
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "main.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert (tmp_path / "main.pdf").stat().st_size > 1000


def test_footnotes_name_the_public_sources_and_no_unshipped_document(tmp_path):
    _metrics(tmp_path, "paper", 80.0, 90.0)
    tex = build_main_tex(apply_overrides(load_params(ROOT / "params.yaml"), ["scale=paper"]), tmp_path, PAPER)
    notes = "\n".join(line for line in tex.splitlines() if line.startswith("{\\footnotesize"))
    assert "facebookresearch/deit README" in notes and "MAE paper (arXiv 2111.06377)" in notes
    assert "AdPE abstract (arXiv 2303.07598)" in notes and "docs/FIDELITY.md row 35" in notes
    assert not DEAD_CITATION.search(notes.replace("\\_", "_"))  # LaTeX-escaped underscores
