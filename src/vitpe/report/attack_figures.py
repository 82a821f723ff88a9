"""Gradient-attack figures in the kinds of the MJP paper: the reconstruction grid of its attack figure
(ground truth, then each model's reconstruction, for original and shuffled client inputs, each panel with
its PSNR), the per-model per-image PSNR strips, and the privacy-accuracy trade-off over seeds. Inputs:
``vitpe attack run``'s reconstructions and per-image tables, and the per-seed metrics JSONs."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from vitpe.errors import ConfigError, DataError  # noqa: E402
from vitpe.report.figures import metric_number, metrics_by_model, save_figure  # noqa: E402
from vitpe.report.names import attack_name, client_mode_name, experiment_name  # noqa: E402

#: the per-row metrics of the attack tables as axis titles (units where they have one)
METRIC_LABELS = {"psnr": "PSNR vs original (dB)", "psnr_kept": "PSNR of kept patches (dB)",
                 "psnr_fed": "PSNR vs fed image (dB)", "psnr_shuffled": "PSNR of shuffled patches (dB)",
                 "perm_psnr": "PSNR after re-ordering (dB)", "ssim": "SSIM", "ssim_fed": "SSIM vs fed image",
                 "pos_acc": "position accuracy", "mse": "MSE"}


def _reconstructions(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    from vitpe.attacks.outputs import read_reconstructions

    tensors, meta = read_reconstructions(path)
    return meta, {k: v.numpy() for k, v in tensors.items()}


def _hwc(image: np.ndarray) -> np.ndarray:
    return np.clip(np.transpose(image, (1, 2, 0)), 0, 1)


def attack_budget(table: pd.DataFrame, attack: str) -> str:
    """The budget an attack ran with, from its rows of the per-image table: ``50 it.`` (``× 4 restarts``
    when it restarted) for optimisation attacks, ``closed form`` for those that record no iterations."""
    rows = table[table["attack"] == attack]
    iterations = rows["info_iterations"].dropna().unique() if "info_iterations" in rows else []
    if len(iterations) == 0:
        return "closed form"
    text = "/".join(f"{int(i)}" for i in sorted(iterations)) + " it."
    restarts = rows["info_restarts"].dropna().unique() if "info_restarts" in rows else []
    if len(restarts) and max(restarts) > 1:
        text += " × " + "/".join(f"{int(r)}" for r in sorted(restarts)) + " restarts"
    return text


def _panel_psnr(table: pd.DataFrame, attack: str, mode: str, image: str, source: Path) -> float:
    rows = table[(table["attack"] == attack) & (table["mode"] == mode) & (table["image"] == image)]
    if len(rows) != 1:
        raise DataError(f"{source}: {len(rows)} rows for attack {attack}, client {mode}, image {image}; "
                        "expected one (the table of the reconstruction file given with it)")
    return float(rows["psnr"].iloc[0])


def grid_figure(recon_files: Sequence[Path], table_files: Sequence[Path], attacks: Sequence[str],
                max_images: int = 3) -> plt.Figure:
    """Rows: image × client mode; columns: the image the client fed, then model × attack. Each
    reconstruction's panel shows its PSNR vs the original image (xlabel); each column title the model,
    the attack and its budget. ``table_files[i]`` is the per-image table of ``recon_files[i]``."""
    from vitpe.attacks.outputs import read_attack_table

    if len(table_files) != len(recon_files):
        raise ConfigError(f"--tables: {len(table_files)} per-image tables for {len(recon_files)} reconstruction "
                          "files; expected one per --recon file, in the same order")
    loaded = [(*_reconstructions(r), read_attack_table(t), Path(t)) for r, t in zip(recon_files, table_files)]
    columns = [(meta, tensors, table, source, attack) for meta, tensors, table, source in loaded for attack in attacks
               if any(k.startswith(f"{attack}/") for k in tensors)]
    if not columns:
        raise DataError(f"none of the reconstruction files holds attacks {', '.join(attacks)}")
    meta0, tensors0 = loaded[0][0], loaded[0][1]
    modes = [m for m in meta0.get("clients", ["plain"]) if f"fed/{m}" in tensors0]
    count = min(max_images, len(meta0.get("images", [])) or tensors0["original"].shape[0])
    rows = [(i, mode) for i in range(count) for mode in modes]
    fig, axes = plt.subplots(len(rows), 1 + len(columns), figsize=(1.5 * (1 + len(columns)), 1.6 * len(rows)),
                             squeeze=False)
    for r, (i, mode) in enumerate(rows):
        axes[r, 0].imshow(_hwc(tensors0[f"fed/{mode}"][i]))
        axes[r, 0].set_ylabel(f"{client_mode_name(mode)}", fontsize=7)
        for c, (meta, tensors, table, source, attack) in enumerate(columns, start=1):
            key = f"{attack}/{mode}"
            if key in tensors:
                axes[r, c].imshow(_hwc(tensors[key][i]))
                psnr = _panel_psnr(table, attack, mode, meta["images"][i], source)
                axes[r, c].set_xlabel(f"{psnr:.1f} dB", fontsize=6, labelpad=1)
    for c, (meta, _, table, _, attack) in enumerate(columns, start=1):
        name = meta.get("experiment", "?")
        axes[0, c].set_title(f"{experiment_name(name)}\n{attack_name(attack)}, {attack_budget(table, attack)}",
                             fontsize=6)
    axes[0, 0].set_title("ground truth\n(as fed)", fontsize=6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def reconstruction_grid(recon_files: Sequence[Path], table_files: Sequence[Path], attacks: Sequence[str],
                        outputs: Sequence[Path], max_images: int = 3) -> None:
    save_figure(grid_figure(recon_files, table_files, attacks, max_images), outputs)


def _strip_offsets(count: int, width: float, seed: int) -> np.ndarray:
    """Horizontal jitter of a strip's points: uniform within ``width``, the same on every run."""
    return np.random.default_rng(seed).uniform(-width / 2, width / 2, count)


def psnr_figure(tables: Sequence[Path]) -> plt.Figure:
    """One panel per attack: per-image PSNR (vs the original image) per model, original vs shuffled
    client, as jittered points with the mean as a short bar (a box of a handful of images would
    mislead). Tables of one model (its folder name) given twice, e.g. two seeds, are pooled."""
    from vitpe.attacks.outputs import read_attack_table

    frames = [read_attack_table(path).assign(model=Path(path).parent.name) for path in tables]
    data = pd.concat(frames, ignore_index=True)
    attacks = list(dict.fromkeys(data["attack"]))
    modes = list(dict.fromkeys(data["mode"]))
    fig, axes = plt.subplots(1, len(attacks), figsize=(3.6 * len(attacks), 3.4), squeeze=False,
                             constrained_layout=True)
    width = 0.8 / max(len(modes), 1)
    for ax, attack in zip(axes[0], attacks):
        sub = data[data["attack"] == attack]
        models = list(dict.fromkeys(sub["model"]))
        for j, mode in enumerate(modes):
            for k, model in enumerate(models):
                values = sub[(sub["model"] == model) & (sub["mode"] == mode)]["psnr"].to_numpy(dtype=float)
                if not len(values):
                    continue
                centre = k + (j - (len(modes) - 1) / 2) * width
                ax.scatter(centre + _strip_offsets(len(values), width * 0.6, k * len(modes) + j), values, s=10,
                           alpha=0.75, color=f"C{j}", label=client_mode_name(mode) if k == 0 else None,
                           gid=f"{attack}/{mode}/{model}", zorder=2)
                ax.hlines(np.nanmean(values), centre - width * 0.4, centre + width * 0.4, color="black", lw=1.5,
                          gid=f"mean:{attack}/{mode}/{model}", zorder=3)
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels([experiment_name(m) for m in models], rotation=30, ha="right", fontsize=7)
        ax.set_title(attack_name(attack))
        ax.set_ylabel("PSNR vs original (dB)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles.append(plt.Line2D([], [], color="black", lw=1.5))
    labels.append("mean")
    fig.legend(handles, [f"{label} client" if label != "mean" else label for label in labels],
               loc="outside lower center", ncol=len(labels), fontsize=7)
    return fig


def psnr_distributions(tables: Sequence[Path], outputs: Sequence[Path]) -> None:
    save_figure(psnr_figure(tables), outputs)


@dataclass(frozen=True)
class PrivacyPoint:
    """One model on the privacy-accuracy plane: per-seed values, their means and sample stds
    (ddof=1; None with one seed)."""
    experiment: str
    seeds: tuple[str, ...]
    top1: tuple[float, ...]
    leakage: tuple[float, ...]

    @property
    def x(self) -> float:
        return float(np.mean(self.top1))

    @property
    def y(self) -> float:
        return float(np.mean(self.leakage))

    @property
    def x_std(self) -> float | None:
        return float(np.std(self.top1, ddof=1)) if len(self.top1) > 1 else None

    @property
    def y_std(self) -> float | None:
        return float(np.std(self.leakage, ddof=1)) if len(self.leakage) > 1 else None


def privacy_points(attack_files: Sequence[Path], accuracy_files: Sequence[Path], metric: str) -> list[PrivacyPoint]:
    """One point per model (in the order of ``attack_files``): clean top-1 against ``metric`` of its
    attacks, seed by seed. A model whose metrics lack ``metric`` in every seed (an attack it was not
    given, e.g. the APRIL models' optimisation attacks) is left out; in some seeds only, a DataError."""
    attacks, accuracy = metrics_by_model(attack_files, "attack metrics"), metrics_by_model(accuracy_files, "accuracy metrics")
    for exp in sorted(set(attacks) | set(accuracy)):
        a, b = sorted(attacks.get(exp, {})), sorted(accuracy.get(exp, {}))
        if a != b:
            raise DataError(f"{exp}: attack metrics for seeds [{', '.join(a)}] but accuracy for [{', '.join(b)}]; "
                            "expected the same seeds (one attacks.json and one classify/finetune.json per seed)")
    points = []
    for exp, per_seed in attacks.items():
        seeds = tuple(sorted(per_seed))
        having = [s for s in seeds if metric in per_seed[s]]
        if not having:
            continue
        if len(having) != len(seeds):
            missing = next(per_seed[s]["_path"] for s in seeds if s not in having)
            raise DataError(f"{missing}: no {metric}, which the other seeds of {exp} have")
        points.append(PrivacyPoint(exp, seeds, tuple(metric_number(accuracy[exp][s], "top1") for s in seeds),
                                   tuple(metric_number(per_seed[s], metric) for s in seeds)))
    return points


MARKERS = "osD^vPX*"  # one open marker per model: coincident models stay visible


def metric_label(metric: str) -> str:
    """``pe_gradient_adaptive_shuffled_psnr_kept_mean`` → ``PE-grad adaptive, shuffled client: PSNR of kept
    patches (dB)``; a key not of the ``<attack>_<mode>_<metric>_mean`` form is shown as it is."""
    for mode in ("plain", "shuffled"):
        attack, sep, rest = metric.partition(f"_{mode}_")
        if sep and rest.endswith("_mean"):
            row = rest.removesuffix("_mean")
            return f"{attack_name(attack)}, {client_mode_name(mode)} client:\n{METRIC_LABELS.get(row, row)}"
    return metric


def _seed_text(points: Sequence[PrivacyPoint]) -> str:
    counts = sorted({len(p.seeds) for p in points})
    n = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"mean ± std over {n} seeds" if counts[-1] > 1 else "1 seed"


def privacy_figure(attack_files: Sequence[Path], accuracy_files: Sequence[Path],
                   metrics: Sequence[str]) -> tuple[plt.Figure, dict[str, list[str]]]:
    """The privacy-accuracy trade-off, one panel per metric: each model at (mean clean top-1, mean
    attack metric) with ± std bars over seeds on both axes (none with one seed). Each model keeps its
    colour and an open marker of its own in every panel, named in one legend below the panels, so models
    at the same point stay visible and no label lies over another. Returns the figure and, per metric,
    the models left out for lacking it."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 3.8), squeeze=False,
                             constrained_layout=True)
    order = list(dict.fromkeys(Path(f).parent.name for f in attack_files))
    left_out, legend = {}, {}
    for ax, metric in zip(axes[0], metrics):
        points = privacy_points(attack_files, accuracy_files, metric)
        if not points:
            raise DataError(f"--metric {metric}: in none of the attack metrics files; expected a key such as "
                            "pe_gradient_adaptive_shuffled_psnr_kept_mean")
        left_out[metric] = [exp for exp in order if exp not in {p.experiment for p in points}]
        for p in points:
            k = order.index(p.experiment) if p.experiment in order else len(order)
            legend[p.experiment] = ax.errorbar(
                p.x, p.y, xerr=p.x_std, yerr=p.y_std, fmt=MARKERS[k % len(MARKERS)], color=f"C{k % 10}",
                mfc="none", capsize=3, ms=7, mew=1.4, label=experiment_name(p.experiment))
        ax.set_xlabel("clean top-1 (%)")
        ax.set_ylabel(metric_label(metric), fontsize=8)
        ax.set_title(f"lower = more private; {_seed_text(points)}", fontsize=8)
        ax.margins(0.15)
    fig.legend(list(legend.values()), [experiment_name(exp) for exp in legend], loc="outside lower center",
               ncol=min(len(legend), 4), fontsize=8, frameon=False)
    return fig, left_out


def privacy_accuracy(attack_files: Sequence[Path], accuracy_files: Sequence[Path], metrics: Sequence[str],
                     outputs: Sequence[Path]) -> dict[str, list[str]]:
    fig, left_out = privacy_figure(attack_files, accuracy_files, metrics)
    save_figure(fig, outputs)
    return left_out
