"""Robustness metrics of Hendrycks et al. as used by MJP (hendrycks/robustness, natural-adv-examples).

- ImageNet-C: corruption errors from the full corruption x severity error matrix; mCE normalised by
  AlexNet's errors over the 15 benchmark corruptions, plus the unnormalised means (over 15, over all
  19, over the 4 extras, and over the 5 corruptions MJP's released ``cal_imagenet_c.py`` evaluates).
- ImageNet-O: AUROC / AUPR with scikit-learn, OOD = positive class (Hendrycks' ``get_measures``), and
  the false-positive rate at 95 % recall.
- ImageNet-A extras: RMS calibration error with adaptive 100-sample bins and AURRA. Written by hand:
  torchmetrics' calibration error uses fixed-width bins, not Hendrycks' sample-count bins.

Errors are percentages (0-100) throughout; so are the derived CEs.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from vitpe.data.subsets import BENCHMARK_CORRUPTIONS, EXTRA_CORRUPTIONS, SEVERITIES

# AlexNet's mean top-1 error over severities per benchmark corruption (google-research/augmix
# ALEXNET_ERR, "raw AlexNet errors taken from hendrycks/robustness").
ALEXNET_ERR: dict[str, float] = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640,
    "defocus_blur": 0.819880, "glass_blur": 0.826268, "motion_blur": 0.785948, "zoom_blur": 0.798360,
    "snow": 0.866816, "frost": 0.826572, "fog": 0.819324, "brightness": 0.564592,
    "contrast": 0.853204, "elastic_transform": 0.646056, "pixelate": 0.717840, "jpeg_compression": 0.606500,
}
# The corruptions left active in MJP's released eval/cal_imagenet_c.py (docs/FIDELITY.md row 20).
MJP_RELEASED_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur")


def corruption_summary(errors: Mapping[tuple[str, int], float]) -> dict[str, float]:
    """Flat ImageNet-C metrics from ``errors[(corruption, severity)]`` (top-1 error, %).

    Per corruption with all 5 severities: ``err_<c>_<s>``, ``ce_unnorm_<c>`` (mean over severities) and,
    for benchmark corruptions, ``ce_<c>`` = sum_s E_s,c / sum_s E^AlexNet_s,c (%). Aggregates appear only
    when every member corruption is present: ``mce`` (AlexNet-normalised, 15), ``mce_unnorm_15``,
    ``mce_unnorm_19`` (15 + 4 extras, what Hendrycks' test.py labels "unnormalized"),
    ``mce_unnorm_extra4`` and ``mce_unnorm_mjp5`` (MJP's released script).
    """
    out: dict[str, float] = {}
    ce_unnorm: dict[str, float] = {}
    for corruption in dict.fromkeys(c for c, _ in errors):
        row = []
        for severity in SEVERITIES:
            if (corruption, severity) not in errors:
                raise ValueError(f"ImageNet-C errors for {corruption} lack severity {severity}")
            row.append(float(errors[corruption, severity]))
            out[f"err_{corruption}_{severity}"] = row[-1]
        ce_unnorm[corruption] = float(np.mean(row))
        out[f"ce_unnorm_{corruption}"] = ce_unnorm[corruption]
        if corruption in ALEXNET_ERR:
            # sum_s E_s,c / sum_s E^AlexNet_s,c with AlexNet's per-severity mean given: mean / mean
            out[f"ce_{corruption}"] = ce_unnorm[corruption] / ALEXNET_ERR[corruption]

    def mean_over(names: Sequence[str], key: str) -> None:
        if all(n in ce_unnorm for n in names):
            out[key] = float(np.mean([ce_unnorm[n] for n in names]))

    if all(c in ce_unnorm for c in BENCHMARK_CORRUPTIONS):
        out["mce"] = float(np.mean([out[f"ce_{c}"] for c in BENCHMARK_CORRUPTIONS]))
    mean_over(BENCHMARK_CORRUPTIONS, "mce_unnorm_15")
    mean_over(BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS, "mce_unnorm_19")
    mean_over(EXTRA_CORRUPTIONS, "mce_unnorm_extra4")
    mean_over(MJP_RELEASED_CORRUPTIONS, "mce_unnorm_mjp5")
    return out


def fpr_at_recall(labels: np.ndarray, scores: np.ndarray, recall_level: float = 0.95) -> float:
    """False-positive rate at the ROC point whose recall is closest to ``recall_level``.

    Hendrycks' ``fpr_and_fdr_at_recall``: the curve over distinct score thresholds, cut at the first
    point of full recall; among equally close points the lowest threshold (highest FPR) wins. His
    copy of sklearn's curve code also appends a (recall 1, FPR 0) point; it ties with the first
    full-recall point, which precedes it, and ``np.argmin`` keeps the first, so it is never chosen
    and is left out here with no effect on the result (docs/FIDELITY.md row 21).
    """
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    fpr, tpr = fpr[1:], tpr[1:]  # drop roc_curve's (0, 0) start point (threshold +inf)
    last = int(np.searchsorted(tpr, tpr[-1]))  # first point reaching full recall
    gap = np.abs(tpr[:last + 1] - recall_level)
    cutoff = int(np.flatnonzero(gap == gap.min())[-1])
    return float(fpr[cutoff])


def ood_measures(ood_scores: np.ndarray, id_scores: np.ndarray, recall_level: float = 0.95) -> dict[str, float]:
    """AUROC, AUPR and FPR at 95 % recall (fractions), OOD = positive, higher score = more anomalous.

    Hendrycks' ``get_measures(out_score, in_score)``: AUPR is scikit-learn's average precision (not
    a trapezoid-integrated PR curve, which pytorch-ood reports).
    """
    scores = np.concatenate([np.asarray(ood_scores, dtype=np.float64), np.asarray(id_scores, dtype=np.float64)])
    labels = np.concatenate([np.ones(len(ood_scores), dtype=np.int32), np.zeros(len(id_scores), dtype=np.int32)])
    return {
        "auroc": float(roc_auc_score(labels, scores)),
        "aupr": float(average_precision_score(labels, scores)),
        "fpr95": fpr_at_recall(labels, scores, recall_level),
    }


def rms_calibration_error(confidence: np.ndarray, correct: np.ndarray, beta: int = 100,
                          drop_last_bin: bool = True) -> float:
    """Hendrycks' ``calib_err(p='2')``: samples sorted by confidence in bins of ``beta`` (the last bin
    takes the remainder), sqrt of the bin-size-weighted mean squared |mean confidence - accuracy|.

    As the reference, the last (most confident) bin is left out of the sum (its loop runs over
    ``range(len(bins) - 1)``), so fewer than 2 ``beta`` samples give 0; ``drop_last_bin=False``
    counts it. Deviation (docs/FIDELITY.md row 70): fewer than ``beta`` samples, where the reference
    raises an IndexError, form one bin that is counted.
    """
    order = np.argsort(confidence, kind="stable")
    confidence = np.asarray(confidence, dtype=np.float64)[order]
    correct = np.asarray(correct, dtype=np.float64)[order]
    n = len(confidence)
    edges = [i * beta for i in range(max(1, n // beta))] + [n]
    bins = list(zip(edges[:-1], edges[1:]))
    if drop_last_bin and n >= beta:
        bins = bins[:-1]
    total = sum((hi - lo) / n * (confidence[lo:hi].mean() - correct[lo:hi].mean()) ** 2 for lo, hi in bins)
    return float(np.sqrt(total))


def aurra(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Area under the response-rate accuracy curve: accuracy of the k most confident, averaged over k."""
    # as the original, np.argsort(confidence)[::-1] (made stable, so ties have one order)
    order = np.argsort(np.asarray(confidence, dtype=np.float64), kind="stable")[::-1]
    hits = np.cumsum(np.asarray(correct, dtype=np.float64)[order])
    return float(np.mean(hits / np.arange(1, len(hits) + 1)))
