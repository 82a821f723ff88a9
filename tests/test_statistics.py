"""Statistics over training seeds: mean ± sample std, and seed-paired differences with a Student-t CI."""
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


def test_paired_difference_is_the_student_t_interval_of_the_mean_difference():
    a, b = [71.0, 73.5, 70.2, 74.1, 72.0], [70.0, 71.0, 70.5, 72.0, 70.1]
    diff = paired_difference(a, b)
    d = np.subtract(a, b)  # 1.0, 2.5, -0.3, 2.1, 1.9: mean 1.44, sample std 1.1171
    half = 2.7764451 * d.std(ddof=1) / np.sqrt(5)  # t(0.975, 4 degrees of freedom)
    assert diff.n == 5 and diff.mean == pytest.approx(1.44)
    assert (diff.ci_low, diff.ci_high) == (pytest.approx(1.44 - half), pytest.approx(1.44 + half))
    assert diff.ci_low == pytest.approx(0.0529, abs=1e-4)


def test_three_seeds_that_agree_in_sign_are_not_enough_when_they_spread():
    """A percentile bootstrap of 3 differences is about their range: 0.5, 1, 9 would "exclude 0"; the
    t interval (t = 4.30 at 2 degrees of freedom) does not."""
    diff = paired_difference([1.5, 2.0, 10.0], [1.0, 1.0, 1.0])
    assert diff.mean == pytest.approx(3.5) and diff.ci_low < 0 < diff.ci_high
    assert diff.ci_high - diff.ci_low == pytest.approx(2 * 4.3026527 * np.std([0.5, 1.0, 9.0], ddof=1) / np.sqrt(3))
    tight = paired_difference([10.0, 10.5, 11.0], [1.0, 1.0, 1.0])  # a consistent difference still clears 0
    assert tight.ci_low > 0


def test_one_pair_has_no_interval_and_bad_input_is_refused():
    one = paired_difference([3.0], [1.0])
    assert (one.mean, one.ci_low, one.ci_high, one.n) == (2.0, None, None, 1)
    with pytest.raises(DataError, match="equally long"):
        paired_difference([1.0, 2.0], [1.0])


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
