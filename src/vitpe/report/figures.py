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
from vitpe.train.progress import read_log  # noqa: E402


def save_figure(fig: plt.Figure, outputs: Sequence[Path]) -> None:
    """Save ``fig`` to every path (format from the extension) via a temporary file, then close it."""
    for out in outputs:
        with atomic_path(out, keep_extension=True) as tmp:  # savefig picks the format from the extension
            fig.savefig(tmp, dpi=150)
    plt.close(fig)


def training_curves(logs: list[Path], outputs: list[Path]) -> None:
    """Loss and learning rate against optimizer step, one line per run (named by its folder).

    An output ending in ``.csv`` gets the losses as a table (``step`` plus one column per run) for
    ``dvc plots``, which does not read JSON lines.
    """
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(9, 3.2), constrained_layout=True)
    losses = {}
    for path in logs:
        records = [r for r in read_log(path) if "loss" in r]
        steps = [r["step"] for r in records]
        name = Path(path).parent.name
        losses[name] = pd.Series([r["loss"] for r in records], index=pd.Index(steps, name="step"))
        ax_loss.plot(steps, [r["loss"] for r in records], label=name, lw=1)
        ax_lr.plot(steps, [r["lr"] for r in records], label=name, lw=1)
    ax_loss.set(xlabel="optimizer step", ylabel="training loss", title="Loss")
    ax_lr.set(xlabel="optimizer step", ylabel="learning rate", title="Schedule")
    ax_loss.legend(fontsize=8)
    for out in [o for o in outputs if Path(o).suffix == ".csv"]:
        write_text(out, pd.DataFrame(losses).to_csv())
    save_figure(fig, [o for o in outputs if Path(o).suffix != ".csv"])
