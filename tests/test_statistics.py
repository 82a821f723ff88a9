"""Statistics over training seeds: mean ± sample std, and seed-paired differences with a bootstrap CI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from vitpe.errors import DataError
from vitpe.report.statistics import pair_by_seed, paired_difference, seed_values, summarize


def test_summary_is_mean_and_sample_std_over_seeds():
    summary = summarize({2: 72.0, 0: 70.0, 1: 74.0})
    assert summary.seeds == (0, 1, 2) and summary.values == (70.0, 74.0, 72.0) and summary.n == 3
    assert summary.mean == pytest.approx(72.0) and summary.std == pytest.approx(2.0)  # ddof=1, not 1.633
    one = summarize({0: 70.0})
    assert one.mean == 70.0 and one.std is None and one.n == 1
    assert summarize({}) is None


def test_paired_bootstrap_is_deterministic_and_contains_the_mean():
    a, b = [71.0, 73.5, 70.2, 74.1, 72.0], [70.0, 71.0, 70.5, 72.0, 70.1]
    first = paired_difference(a, b, resamples=2000, seed=0)
    assert first == paired_difference(a, b, resamples=2000, seed=0)
    assert first.mean == pytest.approx(np.mean(np.subtract(a, b))) and first.n == 5
    assert first.ci_low < first.mean < first.ci_high
    # the CI is a percentile interval of resampled means: inside the range of the differences
    diffs = np.subtract(a, b)
    assert diffs.min() <= first.ci_low and first.ci_high <= diffs.max()


def test_one_pair_has_no_interval_and_bad_input_is_refused():
    one = paired_difference([3.0], [1.0], resamples=2000, seed=0)
    assert (one.mean, one.ci_low, one.ci_high, one.n) == (2.0, None, None, 1)
    with pytest.raises(DataError, match="equally long"):
        paired_difference([1.0, 2.0], [1.0], resamples=10, seed=0)
    with pytest.raises(DataError, match="attacks.metrics.bootstrap"):
        paired_difference([1.0, 2.0], [1.0, 0.0], resamples=0, seed=0)


def test_seed_values_read_each_seed_folder_and_pair_by_seed(tmp_path):
    for seed, top1 in ((0, 70.0), (1, 72.0), (2, None)):
        folder = tmp_path / f"seed{seed}" / "deit_s"
        folder.mkdir(parents=True)
        (folder / "classify.json").write_text(json.dumps({"top1": top1, "status": "ok"}))
    values = seed_values(tmp_path, [0, 1, 2], "deit_s", "classify", "top1", factor=2.0)
    assert values == {0: 140.0, 1: 144.0}  # seed 2 holds no number
    assert pair_by_seed(values, {1: 1.0, 2: 2.0}) == ([1], [144.0], [1.0])
    with pytest.raises(DataError, match="seed3/deit_s/classify.json: metrics file not found"):
        seed_values(tmp_path, [3], "deit_s", "classify", "top1")
