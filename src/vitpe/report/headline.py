"""results/metrics/<scale>/headline.json: the curated numbers `dvc metrics show/diff` tracks.

The detailed per-model JSONs hold thousands of values (per corruption, per image statistic, timings);
DVC shows this one file instead: the per-model numbers of the main.tex tables (the same column
definitions, so the two cannot drift), nested as ``<study>.<experiment>.<metric>``, in one unit
convention (accuracies, agreements, AP, mIoU in percent; PSNR in dB; the rest in their own units) and
rounded one digit finer than the table prints, which removes float noise from reruns. Only per-model
values: a change in one model's metrics changes only that model's keys (the paired comparisons and the
gains over MAE, computed from two models, stay in main.tex and the detailed files).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from vitpe.report.tables import (
    Column, Study, adpe_studies, load_metrics, mjp_studies, privacy_rows, privacy_studies, transfer_studies,
)

# Table columns left out of the headline, still in main.tex and the detailed attacks.json: the attacked
# model's top-1 on the few attack images and the spectral distance next to PSNR and SSIM (keeps the
# tiny headline at about 150 values).
def in_headline(column: Column) -> bool:
    return column.metric != "clean_top1" and not column.metric.endswith("_fft2d_mean")


def headline_key(column: Column) -> str:
    """The headline name of a table column: its metric key, dots (DVC's nesting separator) as ``_``."""
    return column.metric.replace(".", "_")


def _groups(params: dict) -> Iterator[tuple[str, list[str], tuple[Study, ...]]]:
    """(headline group, experiments, the studies whose columns it holds), in main.tex order."""
    experiments = params["experiments"]
    yield "supervised", list(experiments["supervised"]), mjp_studies(params)
    yield "pretrain", list(experiments.get("pretrain", [])), adpe_studies(params)
    yield "transfer", list(experiments.get("transfer", [])), transfer_studies(params)
    optimisation_rows, april_rows = privacy_rows(params)
    optimisation, closed = privacy_studies(params)
    yield "privacy", optimisation_rows, (optimisation,)
    yield "privacy", april_rows, (closed,)


def headline_metrics(params: dict, metrics_root: Path) -> dict[str, dict[str, dict[str, float]]]:
    """``{group: {experiment: {metric: value}}}`` from results/metrics/<scale>/<exp>/*.json.

    A metric a model has no value for (e.g. ‖δ‖ of a run without an adversary) is left out; a missing
    metrics file is a DataError naming it.
    """
    metrics_dir = Path(metrics_root) / params["scale"]
    headline: dict[str, dict[str, dict[str, float]]] = {}
    for group, rows, studies in _groups(params):
        for row in rows:
            values = headline.setdefault(group, {}).setdefault(row, {})
            for column in (c for study in studies for c in study.columns if in_headline(c)):
                value = load_metrics(metrics_dir / row / f"{column.source}.json").get(column.key or column.metric)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    values[headline_key(column)] = round(float(value) * column.scale, column.digits + 1)
    return {group: rows for group, rows in headline.items() if rows}


def count_values(headline: dict) -> int:
    """How many numbers `dvc metrics show` prints for ``headline``."""
    return sum(count_values(v) if isinstance(v, dict) else 1 for v in headline.values())
