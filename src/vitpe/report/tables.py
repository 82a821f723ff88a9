"""results/tables/main.tex: one booktabs table per study, run value next to the sourced paper value.

Principle: print only what the run computed (with the scale it was computed at) and paper values
only from the versioned reference file; a delta only where both exist at the same (paper) scale.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from vitpe.errors import DataError

DISPLAY = {"deit_s": "DeiT-S", "naive_shuffle": "Naive shuffle", "pixel_shuffle": "Pixel shuffle", "mjp": "MJP"}


@dataclass(frozen=True)
class Column:
    metric: str  # key in the metrics JSON and in the paper-number file
    label: str
    source: str  # which metrics file (e.g. "classify")
    scale: float = 1.0  # display factor (fractions -> percent)
    digits: int = 1


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


def load_paper_numbers(path: Path) -> dict:
    try:
        numbers = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: cannot read the paper-number file ({exc.__class__.__name__})")
    if not isinstance(numbers, dict) or "version" not in numbers:
        raise DataError(f"{path}: expected a mapping with a 'version' key")
    return numbers


def load_metrics(path: Path) -> dict[str, float]:
    try:
        metrics = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: metrics file missing")
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})")
    return metrics


def _fmt(value: float | None, digits: int = 1, signed: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def study_frame(study: Study, rows: list[str], metrics_dir: Path, scale: str, paper: dict) -> tuple[pd.DataFrame, list[str]]:
    """The table of one study and the list of sources of the paper values it prints.

    A metric gets paper and delta columns only when some row has a sourced paper value for it.
    """
    section = paper.get(study.key, {})
    sourced = {col.metric for col in study.columns if any(col.metric in section.get(row, {}) for row in rows)}
    records, sources = [], []
    for row in rows:
        record = {"Model": DISPLAY.get(row, row.replace("_", " ")), "Scale": scale}
        for col in study.columns:
            value = load_metrics(metrics_dir / row / f"{col.source}.json").get(col.metric)
            ours = None if value is None else float(value) * col.scale
            record[col.label + (" (run)" if col.metric in sourced else "")] = _fmt(ours, col.digits)
            if col.metric not in sourced:
                continue
            ref = section.get(row, {}).get(col.metric)
            ref_value = None if ref is None else float(ref["value"])
            if ref is not None:
                tag = " (derived)" if ref.get("kind") == "derived" else ""
                sources.append(f"{DISPLAY.get(row, row)} {col.label}: {ref['source']}{tag}")
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


def render_table(frame: pd.DataFrame, title: str, label: str, sources: list[str], scale: str) -> str:
    body = frame.copy()
    body["Model"] = body["Model"].map(_latex_escape)
    latex = body.style.hide(axis="index").to_latex(
        hrules=True, column_format="l" + "r" * (len(body.columns) - 1), position="ht",
        position_float="centering", caption=_latex_escape(title), label=label,
    )
    note = (
        "Run values were computed at the \\emph{" + scale + "} scale"
        + ("" if scale == "paper" else "; they are not comparable with paper values, so no delta is shown")
        + ". Paper values: " + ("; ".join(_latex_escape(s) for s in sources) if sources else "none sourced") + "."
    )
    latex = latex.replace("\\centering\n", "\\centering\n\\small\n", 1)
    return latex.replace("\\end{table}", "{\\footnotesize " + note + "\\par}\n\\end{table}")


def build_main_tex(params: dict, metrics_root: Path, paper_path: Path) -> str:
    scale = params["scale"]
    paper = load_paper_numbers(paper_path)
    metrics_dir = Path(metrics_root) / scale
    tables = []
    rows = params["experiments"]["supervised"]
    if rows:
        for study in mjp_studies(params):
            frame, sources = study_frame(study, rows, metrics_dir, scale, paper)
            tables.append(render_table(frame, study.title, study.label, sources, scale))
    return (
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage[margin=2cm]{geometry}\n"
        "\\begin{document}\n" + "\n".join(tables) + "\\end{document}\n"
    )
