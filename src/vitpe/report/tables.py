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

DISPLAY = {"deit_s": "DeiT-S", "naive_shuffle": "Naive shuffle", "mjp": "MJP"}


@dataclass(frozen=True)
class Column:
    metric: str  # key in the metrics JSON and in the paper-number file
    label: str
    source: str  # which metrics file (e.g. "classify")


@dataclass(frozen=True)
class Study:
    key: str  # section of the paper-number file
    title: str
    columns: tuple[Column, ...]


MJP_STUDY = Study(
    key="mjp",
    title="MJP study: supervised ViT on ImageNet-1K",
    columns=(Column("top1", "Top-1", "classify"), Column("top5", "Top-5", "classify")),
)


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


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def study_frame(study: Study, rows: list[str], metrics_dir: Path, scale: str, paper: dict) -> tuple[pd.DataFrame, list[str]]:
    """The table of one study and the list of sources of the paper values it prints."""
    records, sources = [], []
    for row in rows:
        record = {"Model": DISPLAY.get(row, row.replace("_", " ")), "Scale": scale}
        for col in study.columns:
            ours = load_metrics(metrics_dir / row / f"{col.source}.json").get(col.metric)
            ref = paper.get(study.key, {}).get(row, {}).get(col.metric)
            ref_value = None if ref is None else float(ref["value"])
            if ref is not None:
                tag = " (derived)" if ref.get("kind") == "derived" else ""
                sources.append(f"{DISPLAY.get(row, row)} {col.label}: {ref['source']}{tag}")
            # a tiny-scale run is not comparable with a published number: no delta
            delta = ours - ref_value if (ours is not None and ref_value is not None and scale == "paper") else None
            record[f"{col.label} (run)"] = _fmt(ours)
            record[f"{col.label} (paper)"] = _fmt(ref_value)
            record[f"{col.label} $\\Delta$"] = _fmt(delta, signed=True)
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
    return latex.replace("\\end{table}", "{\\footnotesize " + note + "\\par}\n\\end{table}")


def build_main_tex(params: dict, metrics_root: Path, paper_path: Path) -> str:
    scale = params["scale"]
    paper = load_paper_numbers(paper_path)
    metrics_dir = Path(metrics_root) / scale
    tables = []
    rows = params["experiments"]["supervised"]
    if rows:
        frame, sources = study_frame(MJP_STUDY, rows, metrics_dir, scale, paper)
        tables.append(render_table(frame, MJP_STUDY.title, "tab:mjp", sources, scale))
    return (
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage[margin=2cm]{geometry}\n"
        "\\begin{document}\n" + "\n".join(tables) + "\\end{document}\n"
    )
