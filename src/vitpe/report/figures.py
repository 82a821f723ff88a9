"""Training-curve figures from the engine's per-step JSON-lines logs (PDF and PNG), and the one way
every report figure is saved."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: clusters and CI have no display
import matplotlib.pyplot as plt  # noqa: E402

import pandas as pd  # noqa: E402

from vitpe.io import atomic_path, write_text  # noqa: E402
from vitpe.report.names import experiment_name  # noqa: E402
from vitpe.train.progress import read_log  # noqa: E402


def save_figure(fig: plt.Figure, outputs: Sequence[Path]) -> None:
    """Save ``fig`` to every path (format from the extension) via a temporary file, then close it."""
    for out in outputs:
        with atomic_path(out, keep_extension=True) as tmp:  # savefig picks the format from the extension
            fig.savefig(tmp, dpi=150)
    plt.close(fig)


def training_curves(logs: list[Path], outputs: list[Path]) -> None:
    """Loss and learning rate against optimizer step, one line per run (its folder's display name).

    An output ending in ``.csv`` gets the losses in long format (``step``, ``model``, ``loss``: one row per
    run and step) for ``dvc plots``, whose template colours the runs by ``model`` (dvc.yaml): the runs
    are data, so the plot definition names none of them.
    """
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(9, 3.2), constrained_layout=True)
    losses = []
    for path in logs:
        records = [r for r in read_log(path) if "loss" in r]
        name = experiment_name(Path(path).parent.name)
        losses.append(pd.DataFrame({"step": [r["step"] for r in records], "model": name,
                                    "loss": [r["loss"] for r in records]}))
        ax_loss.plot([r["step"] for r in records], [r["loss"] for r in records], label=name, lw=1)
        ax_lr.plot([r["step"] for r in records], [r["lr"] for r in records], label=name, lw=1)
    ax_loss.set(xlabel="optimizer step", ylabel="training loss", title="Loss")
    ax_lr.set(xlabel="optimizer step", ylabel="learning rate", title="Schedule")
    ax_loss.legend(fontsize=8)
    for out in [o for o in outputs if Path(o).suffix == ".csv"]:
        write_text(out, pd.concat(losses, ignore_index=True).to_csv(index=False))
    save_figure(fig, [o for o in outputs if Path(o).suffix != ".csv"])
