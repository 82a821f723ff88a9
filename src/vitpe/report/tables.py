"""results/tables/main.tex: one booktabs table per study, run value next to the sourced paper value.

Principle: print only what the run computed (with the scale it was computed at) and paper values
only from the versioned paper-number file (workflow/resources/paper_numbers.yaml); a delta only where
both exist at the same (paper) scale. Every model is trained once per seed of the scale
(``scales.<scale>.seeds``): a run cell is the mean ± sample std over the seeds' metrics files
(results/metrics/<scale>/seed<N>/<exp>/<kind>.json), the plain value with one seed.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from vitpe.config import seed_dir
from vitpe.errors import DataError
from vitpe.report.claims import attacked_models, claims_frame
from vitpe.report.names import attack_name, experiment_name
from vitpe.runs import imported_experiments
from vitpe.report.statistics import (
    SeedSummary, load_metrics, pair_by_seed, scale_seed_list, seed_values, summarize,
)


@dataclass(frozen=True)
class Column:
    metric: str  # key in the metrics JSON and in the paper-number file
    label: str
    source: str  # which metrics file (e.g. "classify")
    scale: float = 1.0  # display factor (fractions -> percent)
    digits: int = 1
    key: str | None = None  # key in the metrics JSON when it differs from ``metric``


@dataclass(frozen=True)
class Study:
    key: str  # section of the paper-number file
    title: str
    columns: tuple[Column, ...]
    label: str


def mjp_studies(params: dict) -> tuple[Study, ...]:
    """The MJP tables: accuracy against the sourced values, then robustness and PE information."""
    gamma = params["evaluation"]["consistency_ratio"]
    accuracy = Study(
        key="mjp", label="tab:mjp", title="MJP study: supervised ViT, ImageNet-1K accuracy",
        columns=(Column("top1", "Top-1", "classify"), Column("top5", "Top-5", "classify")),
    )
    robustness = Study(
        key="mjp", label="tab:mjp-robustness",
        title=f"MJP study: robustness and position information (shuffled at gamma = {gamma:g})",
        columns=(
            Column(f"shuffled_top1_r{gamma:.2f}", "Shuffled top-1", "shuffle"),
            Column("consistency_agreement", "Agreement", "shuffle", scale=100.0),
            Column("consistency_l2", "CLS L2", "shuffle", digits=3),
            Column("mce", "mCE", "robustness"),
            Column("mce_unnorm_15", "mCE (unnorm.)", "robustness"),
            Column("a_top1", "IN-A top-1", "robustness"),
            Column("o_aupr", "IN-O AUPR", "robustness"),
            Column("abs_2d_mae", "PE probe MAE", "pe_probe", digits=2),
        ),
    )
    return accuracy, robustness


def adpe_studies(params: dict) -> tuple[Study, ...]:
    """The AdPE table: fine-tune and linear-probe top-1 of every pretrained encoder, plus the pretext."""
    return (Study(
        key="adpe", label="tab:adpe", title="AdPE study: MAE, MAE+ and AdPE pretraining, ImageNet-1K top-1",
        columns=(
            Column("finetune_top1", "Fine-tune top-1", "finetune", key="top1"),
            Column("linprobe_top1", "Linear probe top-1", "linprobe", key="top1"),
            Column("val_loss", "Val. MIM loss", "pretext", digits=3),
            Column("final_adv_l2", "Final $\\|\\delta\\|_2$", "pretext", digits=3),
        ),
    ),)


def model_rows(params: dict) -> tuple[list[str], list[str]]:
    """(rows of the MJP tables, rows of the AdPE table): the trained classifiers and pretraining
    experiments, then the published checkpoints of each kind (experiments.imported)."""
    return (list(params["experiments"]["supervised"]) + list(imported_experiments(params, "classifier")),
            list(params["experiments"].get("pretrain", [])) + list(imported_experiments(params, "encoder")))


# The paper rows a published checkpoint is compared with: a release of the paper's model at the paper's
# size (the scale's model when no arch is given: ViT-S/16 for DeiT and MJP, ViT-B/16 for MAE and AdPE).
# Which AdPE variant the paper transferred is not stated (docs/FIDELITY.md row 35): the transfer rows
# compare either AdPE release with the paper's AdPE, the AdPE table compares none.
PUBLISHED_PAPER_ROWS = {("deit", "deit-small"): "deit_s", ("mjp", "deit-small"): "mjp", ("mae", "vit-base"): "mae"}
PAPER_ARCHS = {"deit": "deit-small", "mjp": "deit-small"}  # every other layout: vit-base


def paper_row(params: dict, row: str, study: str = "") -> str | None:
    """The paper-number row of a table row: its own name for a trained model; for a published checkpoint
    the paper model it is a release of (None: none), in ``study``'s section of the paper numbers."""
    entry = imported_experiments(params).get(row)
    if entry is None:  # the paper's transfer rows: MAE, and one "adpe" for every AdPE variant
        return "adpe" if study == "transfer" and row.startswith("adpe") else row
    arch = entry.get("arch") or PAPER_ARCHS.get(entry["format"], "vit-base")
    if study == "transfer" and entry["format"].startswith("adpe") and arch == "vit-base":
        return "adpe"
    return PUBLISHED_PAPER_ROWS.get((entry["format"], arch))


def _paper_view(params: dict, paper: dict, study: str, rows: list[str]) -> dict:
    """The paper numbers with ``study``'s section keyed by table row (rows without numbers empty)."""
    section = paper.get(study, {})
    return {**paper, study: {row: section.get(paper_row(params, row, study) or "", {}) for row in rows}}


def has_metrics(params: dict, row: str, source: str) -> bool:
    """Whether ``row``'s runs write the ``source`` metrics file: a published encoder has no pretraining
    run, so no pretext metrics (its cells stay empty)."""
    return not (source == "pretext" and row in imported_experiments(params, "encoder"))


def model_name(params: dict, row: str) -> str:
    """A row's display name; published checkpoints say so and name their layout."""
    published = imported_experiments(params)
    if row not in published:
        return experiment_name(row)
    return f"{experiment_name(row)} (published weights, {published[row]['format']})"


def load_paper_numbers(path: Path) -> dict:
    try:
        numbers = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: cannot read the paper-number file ({exc.__class__.__name__})")
    if not isinstance(numbers, dict) or "version" not in numbers:
        raise DataError(f"{path}: expected a mapping with a 'version' key")
    return numbers


def _fmt(value: float | None, digits: int = 1, signed: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _fmt_seeds(summary: SeedSummary | None, digits: int = 1) -> str:
    """A run cell: "mean $\\pm$ std" over seeds, the plain value when only one seed has it."""
    if summary is None:
        return ""
    if summary.std is None:
        return _fmt(summary.mean, digits)
    return f"{summary.mean:.{digits}f} $\\pm$ {summary.std:.{digits}f}"


def column_summary(metrics_dir: Path, seeds: list[int], row: str, col: Column) -> SeedSummary | None:
    """One table cell over seeds, in display units (None: no seed has the metric)."""
    return summarize(seed_values(metrics_dir, seeds, row, col.source, col.key or col.metric, col.scale))


def study_frame(study: Study, rows: list[str], metrics_dir: Path, scale: str, paper: dict, seeds: list[int],
                params: dict) -> tuple[pd.DataFrame, list[str]]:
    """The table of one study and the list of sources of the paper values it prints.

    A metric gets paper and delta columns only when some row has a sourced paper value for it; the
    delta is taken from the mean over seeds.
    """
    section = paper.get(study.key, {})
    sourced = {col.metric for col in study.columns if any(col.metric in section.get(row, {}) for row in rows)}
    records, sources = [], []
    for row in rows:
        record = {"Model": model_name(params, row), "Scale": scale}
        for col in study.columns:
            summary = column_summary(metrics_dir, seeds, row, col) if has_metrics(params, row, col.source) else None
            ours = None if summary is None else summary.mean
            record[col.label + (" (run)" if col.metric in sourced else "")] = _fmt_seeds(summary, col.digits)
            if col.metric not in sourced:
                continue
            ref = section.get(row, {}).get(col.metric)
            ref_value = None if ref is None else float(ref["value"])
            if ref is not None:
                tag = " (derived)" if ref.get("kind") == "derived" else ""
                sources.append(f"{model_name(params, row)} {col.label}: {ref['source']}{tag}")
            # a tiny-scale run is not comparable with a published number: no delta
            delta = ours - ref_value if (ours is not None and ref_value is not None and scale == "paper") else None
            record[f"{col.label} (paper)"] = _fmt(ref_value, col.digits)
            record[f"{col.label} $\\Delta$"] = _fmt(delta, col.digits, signed=True)
        records.append(record)
    return pd.DataFrame.from_records(records), sources


def _latex_escape(text: str) -> str:
    for char, repl in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(char, repl)
    return text


# \fittable{<tabular>}: the tabular at its natural size, or scaled down to \linewidth if wider (a safety
# net: table_latex splits wide tables first). It logs both widths, so a test can check no table shrank.
FITTABLE = (
    "\\newsavebox{\\fitbox}\n"
    "\\newcommand{\\fittable}[1]{\\sbox{\\fitbox}{#1}"
    "\\typeout{vitpe-table: \\the\\wd\\fitbox\\space wide, line \\the\\linewidth}\\ifdim\\wd\\fitbox>\\linewidth"
    "\\resizebox{\\linewidth}{!}{\\usebox{\\fitbox}}\\else\\usebox{\\fitbox}\\fi}\n"
)

#: what a \small tabular may be wide, in points: \linewidth with 2 cm margins is 500 pt
TABLE_WIDTH_PT = 480.0
#: \small (9 pt) characters average ~4.5 pt (measured against pdflatex: the estimate is within -4 % and +8 %);
#: each column adds 2 x \tabcolsep (4 pt, set in the preamble)
CHAR_PT, COLUMN_PT = 4.5, 8.0
#: the columns every part of a split table repeats
KEY_COLUMNS = ("Model", "Scale")


#: LaTeX markup of the cells and notes -> HTML, for the report's copy of the tables
_HTML_MARKUP = ((r"\$\\pm\$", "\u00b1"), (r"\$\\Delta\$", "\u0394"), (r"\$\^\{([^}]*)\}\$", r"<sup>\1</sup>"),
                (r"\$\\\|\\delta\\\|_2\$", "\u2016\u03b4\u2016<sub>2</sub>"),
                (r"\\emph\{([^}]*)\}", r"<em>\1</em>"), (r"\\textit\{([^}]*)\}", r"<em>\1</em>"),
                (r"\\([%_&#])", r"\1"))


def _html_text(text: str) -> str:
    text = html.escape(str(text), quote=False)
    for pattern, repl in _HTML_MARKUP:
        text = re.sub(pattern, repl, text)
    return text


def _visible(cell: str) -> str:
    """A cell's printed characters: its markup counted as the glyphs it draws (the HTML rendering's text)."""
    return re.sub(r"\\[a-zA-Z]+|[${}]", "", html.unescape(re.sub(r"<[^>]+>", "", _html_text(cell))))


def _column_pt(frame: pd.DataFrame, name: str) -> float:
    longest = max([len(_visible(str(name)))] + [len(_visible(str(v))) for v in frame[name]])
    return longest * CHAR_PT + COLUMN_PT


def _column_groups(columns: list[str]) -> list[list[str]]:
    """Columns that belong together (a metric's run, paper and delta columns) stay in one part."""
    groups: dict[str, list[str]] = {}
    for name in columns:
        base = re.sub(r" (\(run\)|\(paper\)|\$\\Delta\$)$", "", name)
        groups.setdefault(base, []).append(name)
    return list(groups.values())


def split_columns(frame: pd.DataFrame, width_pt: float = TABLE_WIDTH_PT) -> list[pd.DataFrame]:
    """The frame as parts that each fit ``width_pt`` at \\small, every part repeating the key columns, so
    no table is printed below its font size (the columns' estimated widths decide where to cut)."""
    keys = [c for c in frame.columns if c in KEY_COLUMNS]
    budget = width_pt - sum(_column_pt(frame, c) for c in keys)
    parts: list[list[str]] = [[]]
    used = 0.0
    for group in _column_groups([c for c in frame.columns if c not in keys]):
        need = sum(_column_pt(frame, c) for c in group)
        if parts[-1] and used + need > budget:
            parts.append([])
            used = 0.0
        parts[-1].extend(group)
        used += need
    return [frame[keys + part] for part in parts]


def seeds_note(seeds: list[int]) -> str:
    """What a run cell is: the mean ± sample std over the listed seeds, or one seed's value."""
    listed = ", ".join(str(s) for s in seeds)
    if len(seeds) == 1:
        return f"Run values are from one training seed ({listed})"
    return (f"Run values are the mean $\\pm$ sample standard deviation over {len(seeds)} training seeds "
            f"({listed})")


def standard_note(scale: str, seeds: list[int], sources: list[str]) -> str:
    """A study table's note: the scale, what a run cell is, and where the paper values come from."""
    return ("Run values were computed at the \\emph{" + scale + "} scale"
            + ("" if scale == "paper" else "; they are not comparable with paper values, so no delta is shown")
            + ". " + seeds_note(seeds) + ". Paper values: "
            + ("; ".join(_latex_escape(s) for s in sources) if sources else "none sourced") + ".")


def _escaped(frame: pd.DataFrame, escape: tuple[str, ...]) -> pd.DataFrame:
    body = frame.copy()
    for name in escape:
        body[name] = body[name].map(_latex_escape)
    return body


@dataclass(frozen=True)
class Table:
    """One table of main.tex, independent of how it is printed (LaTeX, or HTML for the report).

    Cells and the note are LaTeX (``$\\pm$``, ``\\emph``); ``escape`` names the free-text columns.
    ``prose_format`` (paragraph columns) makes a table of sentences: landscape pages, a longtable."""
    frame: pd.DataFrame
    title: str
    label: str
    note: str
    escape: tuple[str, ...] = ("Model",)
    prose_format: str | None = None


def study_table(frame: pd.DataFrame, title: str, label: str, sources: list[str], scale: str, seeds: list[int],
                 escape: tuple[str, ...] = ("Model",), note: str | None = None) -> Table:
    """A study table; ``note`` replaces the standard one (scale, seeds, paper-value sources)."""
    return Table(frame, title, label, standard_note(scale, seeds, sources) if note is None else note, escape)


def table_latex(table: Table) -> str:
    """A booktabs float, split into parts that fit the page when it is too wide (captions "part i of
    n", labels ``label``, ``label-2``, ...), the note under the last part; a prose table as a
    longtable on landscape pages. Nothing is printed below its font size."""
    if table.prose_format:
        latex = _escaped(table.frame, tuple(table.frame.columns)).style.hide(axis="index").to_latex(
            hrules=True, environment="longtable", caption=_latex_escape(table.title), label=table.label,
            column_format=re.sub(r"p\{", r">{\\raggedright\\arraybackslash}p{", table.prose_format),
        )
        return ("\\begin{landscape}\n\\small\n" + latex + "\\noindent{\\footnotesize " + table.note
                + "\\par}\n\\normalsize\n\\end{landscape}\n")
    parts = split_columns(table.frame)
    rendered = []
    for index, part in enumerate(parts, start=1):
        caption = table.title if len(parts) == 1 else f"{table.title} (part {index} of {len(parts)})"
        latex = _escaped(part, table.escape).style.hide(axis="index").to_latex(
            hrules=True, column_format="l" + "r" * (len(part.columns) - 1), position="ht",
            position_float="centering", caption=_latex_escape(caption),
            label=table.label if index == 1 else f"{table.label}-{index}",
        )
        latex = latex.replace("\\centering\n", "\\centering\n\\small\n", 1)
        latex = latex.replace("\\begin{tabular}", "\\fittable{\\begin{tabular}", 1).replace(
            "\\end{tabular}", "\\end{tabular}}", 1)
        if index == len(parts):
            # \\par first: the tabular is a box in a paragraph, so without it the note runs on beside it
            latex = latex.replace("\\end{table}", "\\par{\\footnotesize " + table.note + "\\par}\n\\end{table}")
        rendered.append(latex)
    return "".join(rendered)


def table_html(table: Table) -> str:
    """The same table as an HTML figure: caption, the whole table (a browser scrolls), the note."""
    frame = table.frame.map(_html_text).rename(columns=_html_text)
    body = frame.to_html(index=False, escape=False, border=0, classes="vitpe-table")
    return (f'<figure id="{table.label}">\n<figcaption>{_html_text(table.title)}</figcaption>\n{body}\n'
            f"<p><small>{_html_text(table.note)}</small></p>\n</figure>\n")


# --- transfer: ADE20K and COCO, with the paper's stated AdPE-over-MAE gains -------------------------

TRANSFER_BASELINE = "mae"


def transfer_studies(params: dict) -> tuple[Study, ...]:
    """ADE20K (mmseg IoUMetric, percent) and COCO (mmdet CocoMetric, fractions shown as percent)."""
    ade = Study(key="transfer", label="tab:transfer-ade20k", title="AdPE transfer: ADE20K semantic segmentation (UperNet)",
                columns=(Column("ade20k_miou", "mIoU", "ade20k"), Column("ade20k_aacc", "aAcc", "ade20k"),
                         Column("ade20k_macc", "mAcc", "ade20k")))
    coco = Study(key="transfer", label="tab:transfer-coco",
                 title="AdPE transfer: COCO detection and instance segmentation (Mask R-CNN, ViTDet)",
                 columns=tuple(Column(f"coco_ap{k}_{kind}", f"AP{k}$^{{{kind}}}$", "coco", scale=100.0)
                               for kind in ("box", "mask") for k in ("", "50", "75")))
    return ade, coco


def _seed_paired_gain(metrics_dir: Path, seeds: list[int], row: str, col: Column) -> float | None:
    """The mean over seeds of (row - MAE) for one column, each seed's run against the same seed's MAE."""
    if row == TRANSFER_BASELINE:
        return None
    ours = seed_values(metrics_dir, seeds, row, col.source, col.key or col.metric, col.scale)
    base = seed_values(metrics_dir, seeds, TRANSFER_BASELINE, col.source, col.key or col.metric, col.scale)
    _, a, b = pair_by_seed(ours, base)
    return sum(x - y for x, y in zip(a, b)) / len(a) if a else None


def transfer_tables(params: dict, metrics_dir: Path, scale: str, paper: dict) -> list[Table]:
    """The transfer tables: run values, sourced paper values (delta at the paper scale only), and the
    gain over MAE, run (both rows computed here, at the same scale, the mean of the seed-paired gains)
    next to the paper's stated gain. ``metrics_dir`` is results/metrics/<scale>."""
    rows = list(params["experiments"].get("transfer", []))
    if not rows:
        return []
    seeds = scale_seed_list(params, scale)
    view = _paper_view(params, paper, "transfer", rows)
    tables = []
    for study in transfer_studies(params):
        frame, sources = study_frame(study, rows, metrics_dir, scale, view, seeds, params)
        if TRANSFER_BASELINE in rows:
            for col in study.columns:
                gain_key = f"{col.metric}_vs_mae"
                stated = {row: view["transfer"][row].get(gain_key) for row in rows}
                if not any(stated.values()):
                    continue
                run_gain, paper_gain = [], []
                for row in rows:
                    run_gain.append(_fmt(_seed_paired_gain(metrics_dir, seeds, row, col), col.digits, signed=True))
                    ref = stated[row]
                    paper_gain.append(_fmt(None if ref is None else float(ref["value"]), col.digits, signed=True))
                    if ref is not None:
                        sources.append(f"{model_name(params, row)} {col.label} over MAE: {ref['source']}")
                frame[f"{col.label} vs MAE (run)"] = run_gain
                frame[f"{col.label} vs MAE (paper)"] = paper_gain
        sources = list(dict.fromkeys(sources))
        if any(paper_row(params, row, "transfer") == "adpe" for row in rows) and sources:
            sources.append("AdPE rows use the paper's AdPE values; the transferred checkpoint is not stated "
                           "(docs/FIDELITY.md row 35)")
        tables.append(study_table(frame, study.title, study.label, sources, scale, seeds))
    return tables


# --- privacy: gradient-inversion attacks, per model and paired ------------------------------------

def privacy_rows(params: dict) -> tuple[list[str], list[str]]:
    """(models of the optimisation attacks, APRIL-compatible models), as the workflow attacks them."""
    return attacked_models(params), list(params.get("attacks", {}).get("april_models", []))


def privacy_studies(params: dict) -> tuple[Study, Study]:
    """Per-model means over the attack images (PSNR/SSIM vs the original image; shuffled: the client
    fed the MJP-shuffled image), clean top-1 next to them (docs/FIDELITY.md row 49)."""
    opt = params.get("attacks", {}).get("optimisation", [])
    cols = [Column("clean_top1", "Top-1", "attacks")]
    for attack in opt:
        short = attack_name(attack)
        cols += [Column(f"{attack}_plain_psnr_mean", f"{short} PSNR", "attacks"),
                 Column(f"{attack}_shuffled_psnr_mean", f"{short} PSNR shuf.", "attacks"),
                 Column(f"{attack}_plain_ssim_mean", f"{short} SSIM", "attacks", digits=3)]
    if opt:
        cols += [Column(f"{opt[0]}_plain_fft2d_mean", f"{attack_name(opt[0])} FFT2D", "attacks", digits=3),
                 Column(f"{opt[0]}_shuffled_pos_acc_mean", "Pos. acc. shuf.", "attacks", scale=100.0)]
    for attack in params.get("attacks", {}).get("standard_closed_form", []):  # the closed forms on these models
        short = attack_name(attack)  # shuffled client: the kept patches (what MJP's unknown row leaves exposed)
        cols += [Column(f"{attack}_plain_psnr_mean", f"{short} PSNR", "attacks"),
                 Column(f"{attack}_shuffled_psnr_kept_mean", f"{short} kept shuf.", "attacks")]
    optimisation = Study(key="privacy", label="tab:privacy",
                         title="Privacy: attacks on the standard block, batch 1, labels recovered "
                               "(mean over images, dB)",
                         columns=tuple(cols))
    closed = Study(key="privacy", label="tab:privacy-april",
                   title="Privacy: APRIL closed form on the APRIL-compatible block 0 (shuffled: MJP mask, dB)",
                   columns=(Column("april_plain_psnr_mean", "APRIL PSNR", "attacks"),
                            Column("april_shuffled_psnr_kept_mean", "APRIL kept shuf.", "attacks"),
                            Column("april_shuffled_psnr_shuffled_mean", "APRIL moved shuf.", "attacks"),
                            Column("april_adaptive_shuffled_psnr_kept_mean", "Adapt. kept shuf.", "attacks"),
                            Column("april_adaptive_shuffled_psnr_shuffled_mean", "Adapt. moved shuf.", "attacks")))
    return optimisation, closed


def paired_frame(params: dict, paired: dict, metric: str = "psnr") -> pd.DataFrame:
    """One row per compared pair, attack and client mode: mean, median, std, 95 % CI, Wilcoxon p."""
    records = []
    for a, b in params.get("attacks", {}).get("compare", []):
        for attack in (params["attacks"].get("optimisation", []) + params["attacks"].get("standard_closed_form", [])
                       + params["attacks"].get("closed_form", [])):
            for mode in params["attacks"].get("client", []):
                key = f"{a}_vs_{b}_{attack}_{mode}_{metric}_diff"
                if f"{key}_mean" not in paired:
                    continue
                records.append({
                    "Pair": f"{experiment_name(a)} - {experiment_name(b)}",
                    "Attack": attack_name(attack), "Client": mode,
                    "n": str(int(paired[f"{key}_n"])),
                    "Mean": _fmt(paired[f"{key}_mean"], 2, signed=True),
                    "Median": _fmt(paired[f"{key}_median"], 2, signed=True),
                    "Std": _fmt(paired[f"{key}_std"], 2),
                    "95\\% CI": f"[{paired[f'{key}_ci_low']:+.2f}, {paired[f'{key}_ci_high']:+.2f}]",
                    "Wilcoxon p": _fmt(paired.get(f"{key}_wilcoxon_p"), 3),
                })
    return pd.DataFrame.from_records(records)


def privacy_tables(params: dict, metrics_dir: Path, scale: str, paper: dict) -> list[Table]:
    """The privacy block: per-model attack results (over seeds) and the paired per-image PSNR
    differences (a - b, same images) of the first seed's models: per-image statistics of models of
    different seeds are not pooled (each seed's attack set is the same images, so pooling would count
    an image once per seed). Left out only when no model has attack metrics at all (a workflow
    without attacks). ``metrics_dir`` is results/metrics/<scale>."""
    opt_rows, april_rows = privacy_rows(params)
    rows = opt_rows + april_rows
    seeds = scale_seed_list(params, scale)
    if not rows or not any((metrics_dir / seed_dir(s) / row / "attacks.json").is_file() for row in rows for s in seeds):
        return []
    tables = []
    optimisation, closed = privacy_studies(params)
    for study, study_rows in ((optimisation, opt_rows), (closed, april_rows)):
        if study_rows:
            frame, sources = study_frame(study, study_rows, metrics_dir, scale, paper, seeds, params)
            tables.append(study_table(frame, study.title, study.label, sources, scale, seeds))
    first = seeds[0]
    paired = load_metrics(metrics_dir / seed_dir(first) / "attacks" / "paired.json")
    frame = paired_frame(params, paired)
    if not frame.empty:
        frame = frame.rename(columns={"Pair": "Model"})  # study_table escapes the first column
        title = (f"Privacy: paired per-image PSNR difference (a - b, dB), bootstrap 95% CI of the mean, "
                 f"models of seed {first}")
        note = (f"Per-image differences between the seed-{first} models (the first training seed of the "
                f"\\emph{{{scale}}} scale); the other seeds' comparisons are in "
                f"results/metrics/{scale}/seed\\textit{{N}}/attacks/paired.json.")
        tables.append(study_table(frame, title, "tab:privacy-paired", [], scale, [first], note=note))
    return tables


def claims_table(params: dict, metrics_dir: Path, scale: str) -> Table:
    """The papers' qualitative claims, each with its measured seed-paired difference and verdict."""
    seeds = scale_seed_list(params, scale)
    frame = claims_frame(params, metrics_dir, seeds)
    success = params["attacks"]["metrics"]["success_psnr"]
    note = (
        f"Computed at the \\emph{{{scale}}} scale over {len(seeds)} training seed"
        f"{'s' if len(seeds) > 1 else ''} ({', '.join(str(s) for s in seeds)}). Measured difference: mean of "
        "the seed-paired differences (first model minus second, same seed) with the 95\\% Student-t CI of "
        "that mean (none with one seed). Supported: the CI (with one seed, the difference) lies "
        "entirely on the claimed side of 0. Not testable: a model or attack is not configured, the "
        f"optimisation attack does not reconstruct the baseline (mean PSNR under {success:g} dB), or "
        "both models' mean top-1 is at least 99\\% (saturated)."
    )
    # eight columns of sentences: landscape pages (pdflscape), never shrunk
    return Table(frame, "Paper claims, tested on this run", "tab:claims", note,
                 prose_format="lp{3.6cm}p{2.3cm}p{2.3cm}rrp{2.1cm}p{3.2cm}")


def main_tables(params: dict, metrics_root: Path, paper_path: Path) -> list[Table]:
    """Every table of the report, in order: MJP, AdPE, transfer, privacy, claims."""
    scale = params["scale"]
    paper = load_paper_numbers(paper_path)
    metrics_dir = Path(metrics_root) / scale
    seeds = scale_seed_list(params, scale)
    tables = []
    classifiers, encoders = model_rows(params)
    for rows, studies in ((classifiers, mjp_studies(params)), (encoders, adpe_studies(params))):
        for study in studies if rows else ():
            view = _paper_view(params, paper, study.key, rows)
            frame, sources = study_frame(study, rows, metrics_dir, scale, view, seeds, params)
            tables.append(study_table(frame, study.title, study.label, sources, scale, seeds))
    tables.extend(transfer_tables(params, metrics_dir, scale, paper))
    tables.extend(privacy_tables(params, metrics_dir, scale, paper))
    tables.append(claims_table(params, metrics_dir, scale))
    return tables


def build_main_tex(params: dict, metrics_root: Path, paper_path: Path) -> str:
    return (
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n"
        "\\usepackage[margin=2cm]{geometry}\n\\usepackage{array}\n\\usepackage{longtable}\n"
        "\\usepackage{pdflscape}\n\\setlength{\\tabcolsep}{4pt}\n" + FITTABLE + "\\begin{document}\n"
        + "\n".join(table_latex(t) for t in main_tables(params, metrics_root, paper_path)) + "\\end{document}\n"
    )


def build_main_html(params: dict, metrics_root: Path, paper_path: Path) -> str:
    """The tables of main.tex as one HTML page, for `snakemake --report`."""
    style = ("<style>.vitpe-table{border-collapse:collapse;font-size:90%}.vitpe-table td,.vitpe-table th"
             "{padding:2px 8px;text-align:right;border-bottom:1px solid #ddd}"
             ".vitpe-table td:first-child{text-align:left}figure{margin:2em 0}</style>")
    tables = "".join(table_html(t) for t in main_tables(params, metrics_root, paper_path))
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>vitpe results ({params["scale"]})</title>'
            f"{style}</head>\n<body>\n{tables}</body></html>\n")
