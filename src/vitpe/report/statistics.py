"""Statistics over training seeds: per-seed metric values, mean ± sample std, and seed-paired differences.

Every model is trained once per seed (``scales.<scale>.seeds``) and its metrics land in
results/metrics/<scale>/seed<N>/<exp>/<kind>.json. Comparisons between two models pair the runs of the
same seed (same data order and initialisation stream), so a difference is summarised over the
per-seed differences a_i - b_i, with a Student-t CI of their mean: mean ± t · s / √n, t the 97.5 %
quantile with n - 1 degrees of freedom (4.30 at 3 seeds), exact for normally distributed differences.
Not a percentile bootstrap: its resampled means of n differences cannot leave their range, so at 3
seeds its "95 %" interval is about [smallest, largest] difference, which misses the true mean whenever
all three fall on one side of it (1 time in 4 for symmetric differences).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from vitpe.config import scale_seeds, seed_dir
from vitpe.errors import DataError
from vitpe.io import read_json


@dataclass(frozen=True)
class SeedSummary:
    """One metric over seeds: the value of each seed (in ``seeds`` order), their mean, the sample
    standard deviation (ddof=1; None with a single seed) and how many seeds."""

    seeds: tuple[int, ...]
    values: tuple[float, ...]
    mean: float
    std: float | None
    n: int


def summarize(values: dict[int, float]) -> SeedSummary | None:
    """The summary of ``{seed: value}``; None when no seed has a value."""
    if not values:
        return None
    seeds = tuple(sorted(values))
    array = np.array([values[s] for s in seeds], dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else None
    return SeedSummary(seeds, tuple(float(v) for v in array), float(array.mean()), std, len(array))


@dataclass(frozen=True)
class PairedDifference:
    """Mean of the paired differences a_i - b_i and the 95 % Student-t CI of that mean (None with a
    single pair: one difference has no spread)."""

    mean: float
    ci_low: float | None
    ci_high: float | None
    n: int


def paired_difference(a: list[float], b: list[float]) -> PairedDifference:
    """Mean of a_i - b_i with its 95 % Student-t CI: mean ± t(0.975, n - 1) · s / √n, s the sample
    standard deviation of the differences."""
    if len(a) != len(b) or not a:
        raise DataError(f"paired difference: expected two equally long, non-empty value lists, "
                        f"got {len(a)} and {len(b)}")
    diffs = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    mean = float(diffs.mean())
    if len(diffs) == 1:
        return PairedDifference(mean, None, None, 1)
    half = float(stats.t.ppf(0.975, len(diffs) - 1) * diffs.std(ddof=1) / np.sqrt(len(diffs)))
    return PairedDifference(mean, mean - half, mean + half, len(diffs))


def pair_by_seed(a: dict[int, float], b: dict[int, float]) -> tuple[list[int], list[float], list[float]]:
    """The seeds both ``{seed: value}`` maps hold, with the two value lists in that seed order."""
    seeds = sorted(set(a) & set(b))
    return seeds, [a[s] for s in seeds], [b[s] for s in seeds]


def scale_seed_list(params: dict, scale: str | None = None) -> list[int]:
    """The seeds of ``scale`` (default: the active scale), as the DAG trains them."""
    scale = params["scale"] if scale is None else scale
    try:
        seeds = scale_seeds({**params, "scale": scale})
    except (KeyError, TypeError):
        raise DataError(f"params: expected scales.{scale}.seeds, a list of training seeds") from None
    if not seeds:
        raise DataError(f"params: scales.{scale}.seeds is empty; expected at least one training seed")
    return seeds


def load_metrics(path: Path) -> dict:
    return read_json(path, "metrics file", require_object=True)


def seed_metrics(metrics_dir: Path, seeds: list[int], exp: str, source: str) -> dict[int, dict]:
    """``{seed: metrics}`` of metrics_dir/seed<N>/<exp>/<source>.json; a missing file is a DataError naming it."""
    return {seed: load_metrics(Path(metrics_dir) / seed_dir(seed) / exp / f"{source}.json") for seed in seeds}


def seed_values(metrics_dir: Path, seeds: list[int], exp: str, source: str, key: str,
                factor: float = 1.0) -> dict[int, float]:
    """``{seed: value * factor}`` of one metric; seeds whose file lacks the key (or holds a non-number,
    e.g. a skipped evaluation) are left out."""
    out = {}
    for seed, metrics in seed_metrics(metrics_dir, seeds, exp, source).items():
        value = metrics.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[seed] = float(value) * factor
    return out
