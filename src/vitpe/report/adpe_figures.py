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
from vitpe.train.progress import read_log  # noqa: E402
from vitpe.report.figures import (  # noqa: E402
    legend_below, line_style, metric_number, metrics_by_model, run_seed, save_figure,
)
from vitpe.report.names import experiment_name  # noqa: E402


def delta_norms(logs: Sequence[Path], outputs: Sequence[Path]) -> int:
    """‖δ‖₂ (mean over the δ tensors) and max |δ| against step, one line per AdPE run; returns lines drawn.

    Runs without an adversary (no ``adv_l2`` in their log) are skipped.
    """
    fig, (ax_l2, ax_inf) = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
    drawn = 0
    for path in logs:
        records = [r for r in read_log(path) if "adv_l2" in r]
        if not records:
            continue
        steps = [r["step"] for r in records]
        name = experiment_name(Path(path).parent.name)
        ax_l2.plot(steps, [r["adv_l2"] for r in records], label=name, **line_style(drawn))
        ax_inf.plot(steps, [r["adv_linf"] for r in records], label=name, **line_style(drawn))
        drawn += 1
    seeds = sorted({run_seed(p) for p in logs} - {""})
    where = f" ({', '.join(seeds).replace('seed', 'seed ')})" if seeds else ""
    ax_l2.set(xlabel="optimizer step", ylabel="‖δ‖₂", title="Adversarial δ, L2 norm" + where)
    ax_inf.set(xlabel="optimizer step", ylabel="max |δ|", title="Adversarial δ, L∞ norm" + where)
    if drawn:
        legend_below(fig, ax_l2)
    else:
        ax_l2.text(0.5, 0.5, "no adversarial run", ha="center", transform=ax_l2.transAxes)
    save_figure(fig, outputs)
    return drawn


def accuracy_bars(finetune: Sequence[Path], linprobe: Sequence[Path], outputs: Sequence[Path]) -> None:
    """Grouped bars: fine-tune and linear-probe top-1 per pretraining experiment, the mean over the
    given seeds' metrics files with its std as an error bar and each seed's value as a dot."""
    tuned = {exp: [metric_number(doc, "top1") for doc in runs.values()]
             for exp, runs in metrics_by_model(finetune, "fine-tune metrics").items()}
    probed = {exp: [metric_number(doc, "top1") for doc in runs.values()]
              for exp, runs in metrics_by_model(linprobe, "linear-probe metrics").items()}
    if list(tuned) != list(probed) or [len(v) for v in tuned.values()] != [len(v) for v in probed.values()]:
        raise DataError("fine-tune and linear-probe metrics must list the same experiments and seeds in the same order")
    names, seeds = list(tuned), len(next(iter(tuned.values())))
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * len(names)), 3.8), layout="constrained")
    for index, (offset, values, label) in enumerate(((-0.2, tuned, "fine-tune"), (0.2, probed, "linear probe"))):
        runs = [np.asarray(values[name]) for name in names]
        means = [run.mean() for run in runs]
        stds = [run.std(ddof=1) if len(run) > 1 else 0.0 for run in runs]
        ax.bar(x + offset, means, width=0.4, yerr=stds, capsize=2, label=label, color=f"C{index}",
                      alpha=0.75, error_kw={"lw": 0.8})
        for position, mean in zip(x + offset, means):  # at the foot of the bar, clear of the seeds' dots
            ax.text(position, 1.5, f"{mean:.1f}", ha="center", va="bottom", fontsize=7)
        for position, run in zip(x + offset, runs):
            ax.plot(np.full(len(run), position), run, "o", ms=2.5, color="k", alpha=0.6)
    ax.set_xticks(x, [experiment_name(name) for name in names], rotation=30, ha="right", fontsize=8)
    spread = f"mean ± std over {seeds} seeds; dots: the seeds" if seeds > 1 else "one seed"
    ax.set(ylabel="top-1 (%)", ylim=(0, 105), title=f"Pretrained encoders: fine-tune and linear probe\n({spread})")
    ax.title.set_fontsize(9)
    legend_below(fig, ax)
    save_figure(fig, outputs)
