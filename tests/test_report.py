"""results/tables/main.tex: run values (mean ± std over seeds), sourced paper values, deltas only at the
paper scale, and the claims table."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from test_citations import DEAD_CITATION
from vitpe.config import apply_overrides, load_params, scale_seeds
from vitpe.errors import DataError
from vitpe.report.tables import build_main_html, build_main_tex, study_table, split_columns, table_latex

PAPER = ROOT / "workflow/resources/paper_numbers.yaml"


EXPERIMENTS = load_params(ROOT / "params.yaml")["experiments"]["supervised"]
OTHER = {  # what the MJP evaluations write (a subset of their keys)
    "shuffle": {"shuffled_top1_r0.50": 12.5, "consistency_agreement": 0.875, "consistency_l2": 0.12345},
    "robustness": {"mce": 91.23, "mce_unnorm_15": 70.0, "a_top1": 5.0, "o_aupr": 33.3},
    "pe_probe": {"status": "skipped", "reason": "no table"},
}


PRETRAIN = load_params(ROOT / "params.yaml")["experiments"]["pretrain"]
TRANSFER = load_params(ROOT / "params.yaml")["experiments"]["transfer"]  # test_transfer.py has its own


def _seeds(scale: str) -> list[int]:
    return scale_seeds({**load_params(ROOT / "params.yaml"), "scale": scale})


def _metrics(root, scale, top1, top5, top1_by_seed=None):
    """Each seed's metrics tree; top-1 is ``top1`` + (-1, 0, +1) over tiny's three seeds (mean top1, std
    1) unless ``top1_by_seed`` gives it, the rest is the same in every seed."""
    seeds = _seeds(scale)
    offsets = [i - (len(seeds) - 1) / 2 for i in range(len(seeds))]
    for seed, offset in zip(seeds, offsets):
        seed_top1 = top1 + offset if top1_by_seed is None else top1_by_seed[seed]
        _seed_metrics(root / scale / f"seed{seed}", seed_top1, top5, miou_gain=seed + 1.0)


def _seed_metrics(folder_root, top1, top5, miou_gain):
    for exp in EXPERIMENTS:
        folder = folder_root / exp
        folder.mkdir(parents=True)
        (folder / "classify.json").write_text(json.dumps({"top1": top1, "top5": top5}))
        for name, values in OTHER.items():
            (folder / f"{name}.json").write_text(json.dumps(values))
    for i, exp in enumerate(PRETRAIN):  # what the AdPE stages write
        folder = folder_root / exp
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "finetune.json").write_text(json.dumps({"top1": top1 + i, "top5": top5}))
        (folder / "linprobe.json").write_text(json.dumps({"top1": top1 - 10, "top5": top5}))
        pretext = {"val_loss": 0.5 + i / 100} | ({"final_adv_l2": 0.99} if exp.startswith("adpe") else {})
        (folder / "pretext.json").write_text(json.dumps(pretext))
    for exp in TRANSFER:  # what the transfer rules write; AdPE's mIoU gain over MAE differs per seed
        miou = 40.0 + (miou_gain if exp.startswith("adpe") else 0.0)
        (folder_root / exp / "ade20k.json").write_text(json.dumps({"ade20k_miou": miou, "ade20k_aacc": 80.0}))
        (folder_root / exp / "coco.json").write_text(json.dumps({"coco_ap_box": 0.4, "coco_ap_mask": 0.35}))


def _cells(line: str) -> list[str]:
    return [c.strip().rstrip("\\").strip() for c in line.split("&")]


def _study_row(tex: str, title: str, model: str) -> list[str]:
    """A model's cells in the study titled ``title``, over all parts of a split table (the Model and
    Scale cells once)."""
    cells: list[str] = []
    for part in tex.split("\\caption{" + title)[1:]:
        part = part[:part.index("\\end{table}")]
        row = _cells(next(line for line in part.splitlines() if line.startswith(model + " &")))
        cells += row if not cells else row[2:]
    return cells


def test_tiny_table_prints_run_and_paper_values_without_delta(tmp_path):
    _metrics(tmp_path, "tiny", 41.25, 88.0)
    tex = build_main_tex(load_params(ROOT / "params.yaml"), tmp_path, PAPER)
    row = next(line for line in tex.splitlines() if line.startswith("DeiT-S"))
    # three tiny seeds: top-1 40.25 / 41.25 / 42.25 -> mean 41.25, sample std 1.0; top-5 the same in each
    assert _cells(row) == ["DeiT-S", "tiny", "41.2 $\\pm$ 1.0", "79.9", "", "88.0 $\\pm$ 0.0", "95.0", ""]
    assert "\\toprule" in tex and "\\bottomrule" in tex and "deit\\_small\\_patch16\\_224" in tex
    assert "sample standard deviation over 3 training seeds (0, 1, 2)" in tex


def test_cells_are_mean_and_std_of_the_seeds(tmp_path):
    per_seed = {0: 40.0, 1: 41.0, 2: 45.0}
    _metrics(tmp_path, "tiny", 0.0, 88.0, top1_by_seed=per_seed)
    tex = build_main_tex(load_params(ROOT / "params.yaml"), tmp_path, PAPER)
    row = _cells(next(line for line in tex.splitlines() if line.startswith("MJP &")))
    value, spread = (float(x) for x in row[2].split(" $\\pm$ "))
    values = list(per_seed.values())
    assert value == round(np.mean(values), 1) == 42.0 and spread == round(np.std(values, ddof=1), 1) == 2.6
    # the transfer gain over MAE is the mean of the seed-paired gains: +1, +2, +3 -> +2.0
    ade = tex[tex.index("ADE20K semantic segmentation"):tex.index("COCO detection")]  # every part
    row = [cell for line in ade.splitlines() if line.startswith("AdPE APE, coordinate") for cell in _cells(line)]
    assert "+2.0" in row and row[2] == "42.0 $\\pm$ 1.0"


def test_claims_table_is_appended_with_verdicts(tmp_path):
    _metrics(tmp_path, "tiny", 41.25, 88.0)
    tex = build_main_tex(load_params(ROOT / "params.yaml"), tmp_path, PAPER)
    claims = tex[tex.index("\\label{tab:claims}"):]
    rows = {_cells(line)[1]: _cells(line) for line in claims.splitlines() if line.startswith(("MJP &", "AdPE &"))}
    # the same top-1 in every supervised model: difference 0 in every seed -> not supported
    assert rows["MJP improves accuracy"][2:] == ["MJP - DeiT-S", "Top-1 (\\%)", "+0.00 [+0.00, +0.00]", "3",
                                                  "not supported", ""]
    # AdPE's mIoU is 1, 2, 3 above MAE's in seeds 0, 1, 2: every seed gains, but a spread as large as the
    # mean gain leaves 0 inside the t interval, 2 ± 4.30 / √3
    ade = rows["AdPE improves ADE20K segmentation over MAE"]
    assert ade[4] == "+2.00 [-0.48, +4.48]" and ade[6] == "not supported"
    # no attack metrics written: the privacy claims are not testable
    assert rows["MJP reduces gradient leakage"][6] == "not testable at this scale"


def test_robustness_table_prints_run_values_only(tmp_path):
    _metrics(tmp_path, "tiny", 41.25, 88.0)
    tex = build_main_tex(load_params(ROOT / "params.yaml"), tmp_path, PAPER)
    robustness = tex[tex.index("robustness and position information"):]
    # shuffled top-1, agreement in percent, L2 with 3 digits, mCE x2, A, O, probe skipped -> empty;
    # the same value in every seed: std 0
    pm = [f"{v} $\\pm$ {'0.000' if v == '0.123' else '0.0'}" for v in
          ("12.5", "87.5", "0.123", "91.2", "70.0", "5.0", "33.3")]
    assert _study_row(tex, "MJP study: robustness", "MJP") == ["MJP", "tiny", *pm, ""]
    assert "(paper)" not in robustness.split("\\end{table}")[0]  # nothing sourced: no paper columns


def test_adpe_table_prints_finetune_linprobe_and_the_readme_values(tmp_path):
    _metrics(tmp_path, "paper", 80.0, 90.0)
    params = apply_overrides(load_params(ROOT / "params.yaml"), ["scale=paper"])
    params["experiments"] = {**params["experiments"], "transfer": []}  # the AdPE block alone
    adpe = build_main_tex(params, tmp_path, PAPER)
    rows = {name: _study_row(adpe, "AdPE study", name) for name in ("AdPE RPE, coordinate", "MAE")}
    i = PRETRAIN.index("adpe_rel_coordinate")
    # fine-tune (run, paper, delta), linear probe (run, paper, delta), val loss, |delta|
    assert rows["AdPE RPE, coordinate"] == ["AdPE RPE, coordinate", "paper", f"{80.0 + i:.1f}", "84.4",
                                             f"{80.0 + i - 84.4:+.1f}", "70.0", "", "", f"{0.5 + i / 100:.3f}",
                                             "0.990"]
    assert rows["MAE"][2:7] == ["80.0", "83.6", "-3.6", "70.0", "68.0"]


def test_paper_table_prints_signed_delta(tmp_path):
    _metrics(tmp_path, "paper", 80.4, 94.7)
    params = apply_overrides(load_params(ROOT / "params.yaml"), ["scale=paper"])
    tex = build_main_tex(params, tmp_path, PAPER)
    # one paper seed: plain values, the delta from them
    assert _study_row(tex, "MJP study: supervised", "DeiT-S") == ["DeiT-S", "paper", "80.4", "79.9", "+0.5", "94.7", "95.0", "-0.3"]
    assert "Run values are from one training seed (0)" in tex


def test_missing_or_broken_metrics_name_the_file(tmp_path):
    params = load_params(ROOT / "params.yaml")
    with pytest.raises(DataError, match="classify.json: metrics file not found"):
        build_main_tex(params, tmp_path, PAPER)
    _metrics(tmp_path, "tiny", 1.0, 2.0)
    (tmp_path / "tiny/seed2/deit_s/classify.json").write_text("{not json")
    with pytest.raises(DataError, match="seed2/deit_s/classify.json: not valid JSON"):
        build_main_tex(params, tmp_path, PAPER)


def _attack_metrics(root, params):
    """attacks.json of every attacked model in every seed, and seed 0's paired comparison only."""
    attacked = (params["attacks"]["models"] + params["attacks"]["april_models"]
                + [e for e in params["attacks"]["finetuned"] if e in params["experiments"]["pretrain"]])
    for seed in _seeds("tiny"):
        for exp in attacked:
            (root / "tiny" / f"seed{seed}" / exp).mkdir(exist_ok=True)
            (root / "tiny" / f"seed{seed}" / exp / "attacks.json").write_text(json.dumps({"clean_top1": 50.0 + seed}))
    key = "deit_s_vs_mjp_inverting_gradients_plain_psnr_diff"
    paired = {f"{key}_{stat}": value for stat, value in
              (("mean", 1.5), ("median", 1.25), ("std", 0.5), ("ci_low", 1.0), ("ci_high", 2.0), ("n", 4),
               ("wilcoxon_p", 0.125))}
    (root / "tiny/seed0/attacks").mkdir()
    (root / "tiny/seed0/attacks/paired.json").write_text(json.dumps(paired))


def test_privacy_tables_average_seeds_and_pair_seed_zero(tmp_path):
    params = load_params(ROOT / "params.yaml")
    _metrics(tmp_path, "tiny", 41.25, 88.0)
    _attack_metrics(tmp_path, params)
    tex = build_main_tex(params, tmp_path, PAPER)
    privacy = tex[tex.index("\\label{tab:privacy}"):]
    assert _cells(next(line for line in privacy.splitlines() if line.startswith("MJP &")))[2] == "51.0 $\\pm$ 1.0"
    paired = tex[tex.index("paired per-image PSNR difference"):]
    assert "models of seed 0" in paired.splitlines()[0]
    row = _cells(next(line for line in paired.splitlines() if line.startswith("DeiT-S - MJP")))
    assert row == ["DeiT-S - MJP", "IG", "plain", "4", "+1.50", "+1.25", "0.50", "[+1.00, +2.00]", "0.125"]
    (tmp_path / "tiny/seed0/attacks/paired.json").unlink()
    with pytest.raises(DataError, match="seed0/attacks/paired.json: metrics file not found"):
        build_main_tex(params, tmp_path, PAPER)


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed (.ci/run installs it)")
def test_table_compiles_with_pdflatex(tmp_path):
    _metrics(tmp_path, "tiny", 41.25, 88.0)
    (tmp_path / "main.tex").write_text(build_main_tex(load_params(ROOT / "params.yaml"), tmp_path, PAPER))
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "main.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert (tmp_path / "main.pdf").stat().st_size > 1000


TABLE_WIDTH = re.compile(r"vitpe-table: ([0-9.]+)pt wide, line ([0-9.]+)pt")


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed (.ci/run installs it)")
@pytest.mark.parametrize("scale", ["tiny", "paper"])
def test_every_table_fits_the_page_at_its_font_size(tmp_path, scale):
    """Rendered by pdflatex, no table of main.tex is shrunk (each \\fittable logs its natural width
    against the line width), nothing overflows, and each note sits under its own table: the tables
    stay at \\small (9 pt), the notes at \\footnotesize (8 pt). Tiny: the committed table, from the
    real metrics; paper: the paper-number columns make every table wider."""
    if scale == "tiny":
        tex = (ROOT / "results" / "tables" / "main.tex").read_text()
    else:
        _metrics(tmp_path, scale, 80.0, 95.0)
        tex = build_main_tex(apply_overrides(load_params(ROOT / "params.yaml"), ["scale=paper"]), tmp_path, PAPER)
    (tmp_path / "main.tex").write_text(tex)
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "main.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    log = (tmp_path / "main.log").read_text(errors="replace")
    widths = [(float(w), float(line)) for w, line in TABLE_WIDTH.findall(log)]
    assert len(widths) == tex.count("\\fittable{"), "a table did not log its width"
    assert all(w <= line for w, line in widths), widths
    assert "Overfull \\hbox" not in log and "Float too large" not in log
    # each note: a paragraph under the last part's tabular, inside its float
    assert tex.count("\\end{tabular}}\n\\par{\\footnotesize") == tex.count("\\par{\\footnotesize") > 3


def test_html_tables_are_the_latex_tables():
    """The report's HTML copy: one figure per table of main.tex (unsplit), the same cells with the
    LaTeX markup turned into characters, each note under its table."""
    params = load_params(ROOT / "params.yaml")
    page = build_main_html(params, ROOT / "results" / "metrics", PAPER)
    tex = (ROOT / "results" / "tables" / "main.tex").read_text()
    labels = re.findall(r"\\label\{(tab:[a-z-]+)\}", tex)
    assert re.findall(r'<figure id="(tab:[a-z-]+)">', page) == [lab for lab in labels if not lab[-1].isdigit()]
    assert "<td>DeiT-S</td>" in page and "99.8 \u00b1 0.3" in page and "$" not in page and "\\" not in page
    assert page.count("<small>Run values were computed at the <em>tiny</em> scale") >= 5


def test_a_wide_table_is_split_into_parts_that_repeat_the_model_column():
    frame = pd.DataFrame({"Model": ["DeiT-S", "MJP"], "Scale": ["paper", "paper"]}
                         | {f"Metric {i} (run)": ["80.0 $\\pm$ 0.1"] * 2 for i in range(12)}
                         | {f"Metric {i} (paper)": ["79.8"] * 2 for i in range(12)})
    parts = split_columns(frame)
    assert len(parts) > 1 and all(list(part.columns[:2]) == ["Model", "Scale"] for part in parts)
    assert [c for part in parts for c in part.columns[2:]] == sorted(frame.columns[2:], key=lambda c: (
        int(c.split()[1]), c.endswith("(paper)")))  # each metric's run and paper columns stay together
    tex = table_latex(study_table(frame, "Wide", "tab:wide", [], "paper", [0]))
    assert "(part 1 of" in tex and "\\label{tab:wide-2}" in tex and tex.count("\\footnotesize") == 1


def test_footnotes_name_the_public_sources_and_no_unshipped_document(tmp_path):
    _metrics(tmp_path, "paper", 80.0, 90.0)
    tex = build_main_tex(apply_overrides(load_params(ROOT / "params.yaml"), ["scale=paper"]), tmp_path, PAPER)
    notes = "\n".join(line for line in tex.splitlines() if line.startswith("\\par{\\footnotesize"))
    assert "facebookresearch/deit README" in notes and "MAE paper (arXiv 2111.06377)" in notes
    assert "AdPE abstract (arXiv 2303.07598)" in notes and "docs/FIDELITY.md row 35" in notes
    assert not DEAD_CITATION.search(notes.replace("\\_", "_"))  # LaTeX-escaped underscores


def test_committed_table_is_the_committed_per_seed_metrics():
    """The committed results/tables/main.tex is rebuilt, byte for byte, from the committed per-seed
    metrics, and its numbers are their means ± std (DeiT-S top-1, MJP mCE)."""
    params = load_params(ROOT / "params.yaml")
    tiny = ROOT / "results" / "metrics" / "tiny"
    committed = (ROOT / "results" / "tables" / "main.tex").read_text()
    assert build_main_tex(params, ROOT / "results" / "metrics", PAPER) == committed
    for exp, kind, key in (("deit_s", "classify", "top1"), ("mjp", "robustness", "mce")):
        values = [json.loads((tiny / f"seed{seed}" / exp / f"{kind}.json").read_text())[key]
                  for seed in scale_seeds(params)]
        assert f"{np.mean(values):.1f} $\\pm$ {np.std(values, ddof=1):.1f}" in committed, (exp, key, values)


def test_adpe_accuracy_bars_are_seed_means_with_their_spread(tmp_path, monkeypatch):
    """One bar per experiment and protocol: the mean over the seeds' metrics files, the sample std as
    its error bar, each seed a dot; display names on the axis; the same seeds for both protocols."""
    from vitpe.report import adpe_figures

    values = {"mae": ([99.0, 97.0, 98.0], [16.0, 17.0, 18.0]), "adpe_abs_coordinate": ([90.0, 96.0, 99.0], [12.0, 13.0, 14.0])}
    files: dict[str, list] = {"finetune": [], "linprobe": []}
    for exp, (tuned, probed) in values.items():
        for seed, pair in enumerate(zip(tuned, probed)):
            for kind, top1 in zip(("finetune", "linprobe"), pair):
                path = tmp_path / f"seed{seed}" / exp / f"{kind}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"top1": top1}))
                files[kind].append(path)
    drawn = []
    monkeypatch.setattr(adpe_figures, "save_figure", lambda fig, outputs: drawn.append(fig))
    adpe_figures.accuracy_bars(files["finetune"], files["linprobe"], [tmp_path / "acc.png"])
    ax = drawn[0].axes[0]
    heights = [round(bar.get_height(), 6) for bar in ax.patches]
    assert heights == [98.0, 95.0, 17.0, 13.0]  # fine-tune bars, then linear-probe bars
    assert [t.get_text() for t in ax.get_xticklabels()] == ["MAE", "AdPE APE, coordinate"]
    errors = [line for line in ax.lines if line.get_marker() == "o"]
    assert sorted(np.concatenate([line.get_ydata() for line in errors]).tolist()) == sorted(
        v for tuned, probed in values.values() for v in tuned + probed)
    assert "3 seeds" in ax.get_title()
    with pytest.raises(DataError, match="same experiments and seeds"):
        adpe_figures.accuracy_bars(files["finetune"], files["linprobe"][:-1], [tmp_path / "acc.png"])
