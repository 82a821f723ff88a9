"""AdPE figures: ‖δ‖ over pretraining per mode and norm, and fine-tune /
linear-probe accuracy per pretraining variant. The loss curves reuse ``figures.training_curves``.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vitpe.errors import DataError  # noqa: E402
from vitpe.io import read_json  # noqa: E402
from vitpe.train.progress import read_log  # noqa: E402
from vitpe.report.figures import save_figure  # noqa: E402


def delta_norms(logs: Sequence[Path], outputs: Sequence[Path]) -> int:
    """‖δ‖₂ (mean over the δ tensors) and max |δ| against step, one line per AdPE run; returns lines drawn.

    Runs without an adversary (no ``adv_l2`` in their log) are skipped.
    """
    fig, (ax_l2, ax_inf) = plt.subplots(1, 2, figsize=(9, 3.2), constrained_layout=True)
    drawn = 0
    for path in logs:
        records = [r for r in read_log(path) if "adv_l2" in r]
        if not records:
            continue
        steps = [r["step"] for r in records]
        name = Path(path).parent.name
        ax_l2.plot(steps, [r["adv_l2"] for r in records], label=name, lw=1)
        ax_inf.plot(steps, [r["adv_linf"] for r in records], label=name, lw=1)
        drawn += 1
    ax_l2.set(xlabel="optimizer step", ylabel="‖δ‖₂", title="Adversarial δ, L2 norm")
    ax_inf.set(xlabel="optimizer step", ylabel="max |δ|", title="Adversarial δ, L∞ norm")
    if drawn:
        ax_l2.legend(fontsize=8)
    else:
        ax_l2.text(0.5, 0.5, "no adversarial run", ha="center", transform=ax_l2.transAxes)
    save_figure(fig, outputs)
    return drawn


def _top1(path: Path) -> float:
    metrics = read_json(path, "classification metrics file", require_object=True)
    if not isinstance(metrics.get("top1"), (int, float)):
        raise DataError(f"{path}: expected a number under 'top1' (written by `vitpe eval classify`)")
    return float(metrics["top1"])


def accuracy_bars(finetune: Sequence[Path], linprobe: Sequence[Path], outputs: Sequence[Path]) -> None:
    """Grouped bars: fine-tune and linear-probe top-1 per pretraining experiment (folder names)."""
    names = [Path(p).parent.name for p in finetune]
    if [Path(p).parent.name for p in linprobe] != names:
        raise DataError("fine-tune and linear-probe metrics must list the same experiments in the same order")
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(names)), 3.4), constrained_layout=True)
    for offset, (paths, label) in zip((-0.2, 0.2), ((finetune, "fine-tune"), (linprobe, "linear probe"))):
        values = [_top1(p) for p in paths]
        bars = ax.bar(x + offset, values, width=0.4, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="top-1 (%)", title="Pretrained encoders: fine-tune and linear-probe accuracy")
    ax.legend(fontsize=8)
    save_figure(fig, outputs)
