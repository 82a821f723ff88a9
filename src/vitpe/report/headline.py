"""results/metrics/<scale>/headline.json: the curated numbers `dvc metrics show/diff` tracks.

The detailed per-model JSONs hold thousands of values (per corruption, per image statistic, timings);
DVC shows this one file instead: the per-model numbers of the main.tex tables (the same column
definitions, so the two cannot drift), nested as ``<study>.<experiment>.<metric>``, in one unit
convention (accuracies, agreements, AP, mIoU in percent; PSNR in dB; the rest in their own units) and
rounded one digit finer than the table prints, which removes float noise from reruns. Each value is
the mean over the scale's training seeds (results/metrics/<scale>/seed<N>/...), with the sample std
beside it as ``<metric>_std`` when there are two or more seeds. Only per-model values: a change in one
model's metrics changes only that model's keys (the paired comparisons, the gains over MAE and the
claims, computed from two models, stay in main.tex and the detailed files).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from vitpe.report.statistics import scale_seed_list
from vitpe.report.tables import (
    Column, Study, adpe_studies, column_summary, has_metrics, mjp_studies, model_rows, privacy_rows,
    privacy_studies, transfer_studies,
)

# Table columns left out of the headline, still in main.tex and the detailed metrics files: the attacked
# model's top-1 on the few attack images, the spectral distance and SSIM next to PSNR, the unnormalised
# mCE next to mCE, and the adaptive PE-gradient attack on the original client (the adaptive attacker
# differs only on a shuffled client: its plain PSNR is the PE-gradient one). At tiny this leaves about
# 150 means, each with its std over seeds: about 300 values.
LEFT_OUT_SUFFIXES = ("_fft2d_mean", "_ssim_mean")
LEFT_OUT = {"clean_top1", "mce_unnorm_15", "pe_gradient_adaptive_plain_psnr_mean"}


def in_headline(column: Column) -> bool:
    return column.metric not in LEFT_OUT and not column.metric.endswith(LEFT_OUT_SUFFIXES)


def headline_key(column: Column) -> str:
    """The headline name of a table column: its metric key, dots (DVC's nesting separator) as ``_``."""
    return column.metric.replace(".", "_")


def _groups(params: dict) -> Iterator[tuple[str, list[str], tuple[Study, ...]]]:
    """(headline group, experiments, the studies whose columns it holds), in main.tex order."""
    classifiers, encoders = model_rows(params)
    yield "supervised", classifiers, mjp_studies(params)
    yield "pretrain", encoders, adpe_studies(params)
    yield "transfer", list(params["experiments"].get("transfer", [])), transfer_studies(params)
    optimisation_rows, april_rows = privacy_rows(params)
    optimisation, closed = privacy_studies(params)
    yield "privacy", optimisation_rows, (optimisation,)
    yield "privacy", april_rows, (closed,)


def headline_metrics(params: dict, metrics_root: Path) -> dict[str, dict[str, dict[str, float]]]:
    """``{group: {experiment: {metric: mean, metric_std: std}}}`` over the seeds' metrics files
    results/metrics/<scale>/seed<N>/<exp>/*.json (``_std`` only with two or more seeds).

    A metric a model has no value for (e.g. ‖δ‖ of a run without an adversary) is left out; a missing
    metrics file is a DataError naming it.
    """
    metrics_dir = Path(metrics_root) / params["scale"]
    seeds = scale_seed_list(params)
    headline: dict[str, dict[str, dict[str, float]]] = {}
    for group, rows, studies in _groups(params):
        for row in rows:
            values = headline.setdefault(group, {}).setdefault(row, {})
            for column in (c for study in studies for c in study.columns if in_headline(c)):
                if not has_metrics(params, row, column.source):
                    continue
                summary = column_summary(metrics_dir, seeds, row, column)
                if summary is None:
                    continue
                values[headline_key(column)] = round(summary.mean, column.digits + 1)
                if summary.std is not None:
                    values[headline_key(column) + "_std"] = round(summary.std, column.digits + 1)
    return {group: rows for group, rows in headline.items() if rows}


def count_values(headline: dict) -> int:
    """How many numbers `dvc metrics show` prints for ``headline``."""
    return sum(count_values(v) if isinstance(v, dict) else 1 for v in headline.values())
