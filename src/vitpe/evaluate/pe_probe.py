"""Do the learned position embeddings encode position? Linear probes and the PE spectrum.

Official MJP code, ``pestudy/absolute.py`` and ``relative.py``: take the PE table's patch
rows (no CLS row; MJP's shared unknown row is not a position and is left out), regress with ordinary
least squares under 5-fold cross-validation (KFold without shuffling over rows permuted once), and
report the mean absolute error averaged over folds (and over outputs in 2D):

- absolute: the 1D index ``i`` and the 2D ``(i // grid, i % grid)`` from PE[i];
- relative: ``|i - j|`` and ``(|drow|, |dcol|)`` from PE[i] - PE[j], the pairs drawn by two independent
  permutations of the rows.

Fixed defect: the official 2D relative targets are uint8, so negative differences wrap around
(|d| becomes 256 - |d|) before the absolute value; here differences are taken in signed integers.
The official permutations are unseeded; here they come from ``seed``.

Also: the singular values of the patch-row table (the official repository's ``.gitignore`` lists an
unreleased ``scripts/eigenvalues.py`` and ``eigenvalues.pdf``) and their effective rank.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import KFold, cross_val_score
from torch import nn

from vitpe.runs import SupervisedRun
from vitpe.errors import ConfigError
from vitpe.evaluate.common import load_trained
from vitpe.io import write_json

FOLDS = 5


def patch_pe_rows(model: nn.Module) -> np.ndarray | None:
    """The [N, D] patch rows of the model's absolute PE table (float64), or None if it has none."""
    table = getattr(model.pe, "table", None)
    if table is None:
        return None
    return table.detach().double().cpu().numpy()[0, 1:]


def _cv_mae(features: np.ndarray, targets: np.ndarray, folds: int) -> float:
    scores = cross_val_score(LinearRegression(), features, targets, cv=KFold(folds),
                             scoring="neg_mean_absolute_error")
    return float(-scores.mean())


def _coords(index: np.ndarray, grid: int) -> np.ndarray:
    return np.stack([index // grid, index % grid], axis=1).astype(np.int64)


def absolute_probe(pe: np.ndarray, grid: int, seed: int = 0, folds: int = FOLDS) -> dict[str, float]:
    """Cross-validated MAE of the 1D index and the (row, col) coordinates regressed from PE rows."""
    index = np.random.default_rng(seed).permutation(len(pe))
    x = pe[index]
    return {"abs_1d_mae": _cv_mae(x, index.astype(np.float64), folds),
            "abs_2d_mae": _cv_mae(x, _coords(index, grid).astype(np.float64), folds)}


def relative_probe(pe: np.ndarray, grid: int, seed: int = 0, folds: int = FOLDS) -> dict[str, float]:
    """Cross-validated MAE of |di| and (|drow|, |dcol|) regressed from PE[a] - PE[b] over N random pairs."""
    rng = np.random.default_rng(seed)
    a, b = rng.permutation(len(pe)), rng.permutation(len(pe))
    d1, d2 = relative_targets(a, b, grid)
    x = pe[a] - pe[b]
    return {"rel_1d_mae": _cv_mae(x, d1.astype(np.float64), folds),
            "rel_2d_mae": _cv_mae(x, d2.astype(np.float64), folds)}


def relative_targets(a: np.ndarray, b: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """|a - b| and (|drow|, |dcol|) in signed int64, whatever the index dtype (the official uint8
    targets wrap around: 0 - 13 becomes 243)."""
    a, b = np.asarray(a).astype(np.int64), np.asarray(b).astype(np.int64)
    return np.abs(a - b), np.abs(_coords(a, grid) - _coords(b, grid))


def singular_values(pe: np.ndarray) -> np.ndarray:
    """Singular values of the [N, D] table, descending (uncentred, as a spectrum of the table itself)."""
    return np.linalg.svd(pe, compute_uv=False)


def effective_rank(values: np.ndarray) -> float:
    """exp(entropy) of the normalised singular values (Roy & Vetterli): 1 = rank one, N = flat."""
    p = values / values.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def probe_metrics(pe: np.ndarray, grid: int, seed: int = 0, folds: int = FOLDS) -> dict[str, Any]:
    """All probe metrics of one table as flat keys; singular values as ``sv_000``, ``sv_001``, ..."""
    if pe.shape[0] != grid * grid:
        raise ValueError(f"PE table has {pe.shape[0]} patch rows, expected {grid}x{grid}")
    values = singular_values(pe)
    out: dict[str, Any] = {**absolute_probe(pe, grid, seed, folds), **relative_probe(pe, grid, seed, folds)}
    out.update({"sv_effective_rank": effective_rank(values), "num_positions": int(pe.shape[0]),
                "embed_dim": int(pe.shape[1]), "grid": grid, "folds": folds})
    out.update({f"sv_{i:03d}": float(v) for i, v in enumerate(values)})
    return out


def check_folds(folds: int) -> None:
    if folds < 2:
        raise ConfigError(f"--folds {folds}: cross-validation needs at least 2 folds")


def pe_probe_metrics(model: nn.Module, run: SupervisedRun, folds: int = FOLDS) -> dict[str, Any]:
    """The probe metrics of a loaded model's PE table; a PE without a table gets a recorded reason."""
    check_folds(folds)
    pe = patch_pe_rows(model)
    base = {"pos_embed": run.pos_embed, "seed": run.seed, "scale": run.scale}
    if pe is None:
        return {**base, "status": "skipped",
                "reason": f"pos_embed {run.pos_embed!r} has no position-embedding table to probe"}
    return {**base, "status": "ok", **probe_metrics(pe, run.model.grid_size, run.seed, folds)}


def evaluate_pe_probe(run: SupervisedRun, weights: Path, out_json: Path, folds: int = FOLDS) -> dict[str, Any]:
    """Probe the PE table of ``weights``; a PE without a table gets a recorded reason instead."""
    check_folds(folds)
    model, _ = load_trained(run, weights, "cpu")
    metrics = pe_probe_metrics(model, run, folds)
    write_json(out_json, metrics)
    return metrics
