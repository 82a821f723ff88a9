"""Training-curve figures from the engine's per-step JSON-lines logs (PDF and PNG), and the one way
every report figure is saved."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: clusters and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

import pandas as pd  # noqa: E402

from vitpe.errors import DataError, OutputError  # noqa: E402
from vitpe.io import all_or_none, atomic_path, read_json, write_text  # noqa: E402
from vitpe.report.names import experiment_name  # noqa: E402
from vitpe.train.progress import read_log  # noqa: E402


def save_figure(fig: plt.Figure, outputs: Sequence[Path]) -> None:
    """Save ``fig`` to every path (format from the extension) via a temporary file, then close it; all
    paths or none (an OutputError for an extension matplotlib cannot write, before any is written)."""
    try:
        supported = fig.canvas.get_supported_filetypes()
        for out in map(Path, outputs):
            if out.suffix[1:].lower() not in supported:
                raise OutputError(f"{out}: cannot save a figure as {out.suffix or 'a file without an extension'} "
                                  f"(expected one of: {', '.join('.' + ext for ext in sorted(supported))})")
        with all_or_none(outputs):
            for out in outputs:
                with atomic_path(out, keep_extension=True) as tmp:  # savefig picks the format from the extension
                    fig.savefig(tmp, dpi=150)
    finally:
        plt.close(fig)


LINESTYLES = ("-", "--", ":", "-.")


def line_style(index: int) -> dict:
    """Colour and dash of the index-th run, so runs whose lines overlap stay distinguishable."""
    return {"color": f"C{index % 10}", "linestyle": LINESTYLES[index % len(LINESTYLES)], "lw": 1.2}


def legend_below(fig: plt.Figure, ax: plt.Axes) -> None:
    """The runs' legend under the panels (a constrained-layout figure), never over the data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        # as many columns as the widest label lets fit across the figure (8-pt text, ~4.8 pt a glyph, plus the
        # line sample), at most 4
        entry_pt = 4.8 * max(len(label) for label in labels) + 36
        ncol = max(1, min(4, len(labels), int(fig.get_figwidth() * 72 // entry_pt)))
        fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=8, frameon=False)


def run_seed(path: Path) -> str:
    """``seed<N>`` of a per-run file (results/<kind>/<scale>/seed<N>/.../<exp>/<file>), or ''."""
    return next((part for part in Path(path).parts if part.startswith("seed") and part[4:].isdigit()), "")


def metrics_by_model(files: Sequence[Path], what: str) -> dict[str, dict[str, dict]]:
    """``{exp: {seed folder: JSON}}`` of files laid out as ``.../seed<N>/<exp>/<kind>.json``, in the
    order given; a second file of one model and seed is a DataError."""
    grouped: dict[str, dict[str, dict]] = {}
    for path in map(Path, files):
        exp, seed = path.parent.name, path.parent.parent.name
        if seed in grouped.setdefault(exp, {}):
            raise DataError(f"{path}: a second {what} of {exp} in {seed}; expected one per model and seed "
                            "(.../seed<N>/<exp>/<kind>.json)")
        grouped[exp][seed] = read_json(path, what, require_object=True) | {"_path": str(path)}
    return grouped


def metric_number(document: dict, key: str) -> float:
    """``document[key]`` of a ``metrics_by_model`` JSON as a float; a DataError naming its file otherwise."""
    value = document.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise DataError(f"{document['_path']}: {key} is {value!r}; expected a number")
    return float(value)


def training_curves(logs: list[Path], outputs: list[Path]) -> None:
    """Loss and learning rate against optimizer step, one line per run (its folder's display name).

    Runs with the same learning-rate schedule share one line in the schedule panel (it is labelled with
    their names), so every drawn line is visible. An output ending in ``.csv`` gets the losses in long
    format (``step``, ``model``, ``loss``: one row per run and step) for ``dvc plots``, whose template
    colours the runs by ``model`` (dvc.yaml): the runs are data, so the plot definition names none.
    """
    validations = {path: read_log(path, validation=True) for path in logs}
    panels = 3 if any(validations.values()) else 2  # logs written before per-epoch validation have none
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.6), layout="constrained")
    ax_loss, ax_lr = axes[:2]
    losses, schedules = [], {}
    for index, path in enumerate(logs):
        records = read_log(path)
        name = experiment_name(Path(path).parent.name)
        steps = [r["step"] for r in records]
        losses.append(pd.DataFrame({"step": steps, "model": name, "loss": [r["loss"] for r in records]}))
        ax_loss.plot(steps, [r["loss"] for r in records], label=name, **line_style(index))
        schedules.setdefault((tuple(steps), tuple(r["lr"] for r in records)), []).append(name)
        if validations[path]:  # classifiers log top-1 (and top-5), pretraining the held-out loss
            metric = next(iter(validations[path][0]["validation"]))
            axes[2].plot([r["epoch"] + 1 for r in validations[path]],
                         [r["validation"][metric] for r in validations[path]], marker=".", **line_style(index))
            axes[2].set(xlabel="epoch", title="Validation", ylabel={"top1": "validation top-1 (%)"}.get(
                metric, "held-out masked-patch loss" if metric == "loss" else metric))
            axes[2].xaxis.set_major_locator(MaxNLocator(integer=True))
    for index, ((steps, lrs), names) in enumerate(schedules.items()):
        label = "all runs" if len(schedules) == 1 else ", ".join(names)
        ax_lr.plot(steps, lrs, label=label, **line_style(index))
    seeds = sorted({run_seed(p) for p in logs} - {""})
    ax_loss.set(xlabel="optimizer step", ylabel="training loss",
                title="Loss" + (f" ({', '.join(seeds).replace('seed', 'seed ')})" if seeds else ""))
    ax_lr.set(xlabel="optimizer step", ylabel="learning rate", title="Schedule")
    ax_lr.legend(fontsize=7, title="schedule of", title_fontsize=7)
    legend_below(fig, ax_loss)
    for out in [o for o in outputs if Path(o).suffix == ".csv"]:
        write_text(out, pd.concat(losses, ignore_index=True).to_csv(index=False))
    save_figure(fig, [o for o in outputs if Path(o).suffix != ".csv"])
