"""MJP figures: accuracy vs shuffle ratio, PE singular-value spectra, PE cosine-similarity maps, and
the method illustration (the MJP paper's overview figure) from a real validation image.

Inputs are files the DAG declares: the ``vitpe eval shuffle`` / ``pe-probe`` JSONs, the trained
weights (safetensors, timm keys: the PE table is ``pos_embed``) and one image of the dataset.
Every figure is written as each requested file (.png, .pdf), atomically.
"""
from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: clusters and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vitpe.errors import DataError  # noqa: E402
from vitpe.io import read_json  # noqa: E402
from vitpe.report.figures import legend_below, save_figure  # noqa: E402
from vitpe.report.names import experiment_name  # noqa: E402

_SWEEP_KEY = re.compile(r"^shuffled_top1_r(\d+\.\d+)$")
_SV_KEY = re.compile(r"^sv_(\d{3,})$")


def _labels(paths: Sequence[Path], labels: Sequence[str] | None) -> list[str]:
    """Explicit labels, or each file's folder name (results/.../<experiment>/shuffle.json)."""
    if labels:
        if len(labels) != len(paths):
            raise DataError(f"{len(labels)} labels for {len(paths)} input files")
        return list(labels)
    return [Path(p).parent.name for p in paths]


def sweep_points(metrics: dict) -> tuple[list[float], list[float]]:
    """(ratios, top-1) from a shuffle JSON's ``shuffled_top1_rX.XX`` keys, by increasing ratio."""
    points = sorted((float(m.group(1)), float(v)) for k, v in metrics.items() if (m := _SWEEP_KEY.match(k)))
    return [r for r, _ in points], [a for _, a in points]


def shuffle_curves(jsons: Sequence[Path], outputs: Sequence[Path], labels: Sequence[str] | None = None) -> None:
    """Top-1 under MJP-shuffled input against the shuffle ratio: one line per model, the mean over its
    seeds (files with one label are one model's seeds), with a band of ± one std over seeds."""
    fig, ax = plt.subplots(figsize=(5.6, 4.2), constrained_layout=True)
    scale = None
    runs: dict[str, list[tuple[list[float], list[float]]]] = {}
    for path, label in zip(jsons, _labels(jsons, labels)):
        metrics = read_json(path, "metrics file", require_object=True)
        ratios, top1 = sweep_points(metrics)
        if not ratios:
            raise DataError(f"{path}: no shuffled_top1_r* keys (written by `vitpe eval suite`?)")
        if runs.get(label) and runs[label][0][0] != ratios:
            raise DataError(f"{path}: shuffle ratios {ratios} differ from the other seeds' of {label}")
        runs.setdefault(label, []).append((ratios, top1))
        scale = metrics.get("scale", scale)
    for label, seeds in runs.items():
        ratios, curves = seeds[0][0], np.array([top1 for _, top1 in seeds])
        mean = curves.mean(axis=0)
        line, = ax.plot(ratios, mean, marker="o", ms=3, lw=1.2,
                        label=f"{experiment_name(label)} (n={len(curves)})" if len(curves) > 1 else experiment_name(label))
        if len(curves) > 1:
            std = curves.std(axis=0, ddof=1)
            ax.fill_between(ratios, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
    seeds_note = "mean ± std over seeds" if any(len(s) > 1 for s in runs.values()) else "one seed"
    ax.set(xlabel="shuffle ratio $\\gamma$ (MJP block mask)", ylabel="top-1 accuracy (%)",
           title="Accuracy under MJP-shuffled input" + (f" ({scale} scale)" if scale else "") + f"\n{seeds_note}")
    ax.title.set_fontsize(10)
    ax.set_xlim(-0.02, 1.0)
    ax.set_ylim(bottom=0)  # accuracies on an honest axis
    ax.grid(alpha=0.3)
    legend_below(fig, ax)
    save_figure(fig, outputs)


def spectrum(metrics: dict) -> np.ndarray | None:
    """Singular values from a pe-probe JSON (``sv_000``, ...), or None when it was skipped."""
    if metrics.get("status") != "ok":
        return None
    pairs = sorted((int(m.group(1)), float(v)) for k, v in metrics.items() if (m := _SV_KEY.match(k)))
    return np.array([v for _, v in pairs]) if pairs else None


def pe_spectra(jsons: Sequence[Path], outputs: Sequence[Path], labels: Sequence[str] | None = None) -> None:
    """Normalised singular values sigma_i / sigma_1 of each model's PE table (log scale).

    Normalised because the tables start at different scales (MJP's N(0, 1) init, DeiT's 0.02).
    """
    fig, ax = plt.subplots(figsize=(4.6, 3.4), constrained_layout=True)
    skipped = []
    for path, label in zip(jsons, _labels(jsons, labels)):
        values = spectrum(read_json(path, "metrics file", require_object=True))
        if values is None:
            skipped.append(label)
            continue
        ax.semilogy(np.arange(1, len(values) + 1), values / values[0], lw=1.2, label=label)
    ax.set(xlabel="index $i$", ylabel="$\\sigma_i / \\sigma_1$", title="PE singular-value spectrum")
    ax.grid(alpha=0.3, which="both")
    if skipped:
        ax.text(0.98, 0.98, "no PE table: " + ", ".join(skipped), transform=ax.transAxes, ha="right",
                va="top", fontsize=7)
    legend_below(fig, ax)
    save_figure(fig, outputs)


def pe_table(weights: Path) -> np.ndarray | None:
    """The [N, D] patch rows of ``pos_embed`` in a timm-keyed safetensors file (None: no table)."""
    from vitpe.models.weights import read_weights  # torch import only when needed

    state = read_weights(Path(weights))
    if "pos_embed" not in state:
        return None
    return state["pos_embed"].double().numpy()[0, 1:]


def cosine_similarity(rows: np.ndarray) -> np.ndarray:
    unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return unit @ unit.T


def default_positions(grid: int) -> list[tuple[int, int]]:
    """A corner, an edge midpoint, the centre and an off-centre cell of the grid."""
    mid = grid // 2
    return [(0, 0), (0, mid), (mid, mid), (grid - 1, grid // 4)]


def pe_similarity_maps(weights: Sequence[Path], outputs: Sequence[Path], labels: Sequence[str] | None = None,
                       positions: Sequence[tuple[int, int]] | None = None) -> None:
    """For each model (row) and reference position (column): cosine similarity of that position's PE
    with every position's PE, drawn on the patch grid (the reference cell marked)."""
    names = _labels(weights, labels)
    tables = [pe_table(w) for w in weights]
    grids = {int(round(math.sqrt(t.shape[0]))) for t in tables if t is not None}
    if len(grids) > 1:
        raise DataError(f"PE tables of different grid sizes {sorted(grids)}: compare models of one scale")
    grid = grids.pop() if grids else 1
    positions = list(positions or default_positions(grid))
    for r, c in positions:
        if not (0 <= r < grid and 0 <= c < grid):
            raise DataError(f"reference position ({r}, {c}) is outside the {grid}x{grid} grid")
    fig, axes = plt.subplots(len(tables), len(positions), squeeze=False, constrained_layout=True,
                             figsize=(1.9 * len(positions) + 0.8, 1.9 * len(tables)))
    image = None
    for row, (table, name) in enumerate(zip(tables, names)):
        sim = None if table is None else cosine_similarity(table)
        for col, (r, c) in enumerate(positions):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(name, fontsize=9)
            if row == 0:
                ax.set_title(f"position ({r}, {c})", fontsize=9)
            if sim is None:
                ax.text(0.5, 0.5, "no PE table", ha="center", va="center", fontsize=8, transform=ax.transAxes)
                continue
            image = ax.imshow(sim[r * grid + c].reshape(grid, grid), cmap="RdBu_r", vmin=-1, vmax=1)
            ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec="black", lw=1.2))
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="cosine similarity")
    save_figure(fig, outputs)


def _outline(ax: plt.Axes, selected: np.ndarray, patch: int, color: str, lw: float) -> None:
    """Draw the boundary of the union of selected grid cells (image pixel coordinates)."""
    grid = selected.shape[0]
    for r, c in zip(*np.nonzero(selected)):
        x0, y0 = c * patch - 0.5, r * patch - 0.5
        edges = {(-1, 0): ([x0, x0 + patch], [y0, y0]), (1, 0): ([x0, x0 + patch], [y0 + patch, y0 + patch]),
                 (0, -1): ([x0, x0], [y0, y0 + patch]), (0, 1): ([x0 + patch, x0 + patch], [y0, y0 + patch])}
        for (dr, dc), (xs, ys) in edges.items():
            rr, cc = r + dr, c + dc
            if not (0 <= rr < grid and 0 <= cc < grid) or not selected[rr, cc]:
                ax.plot(xs, ys, color=color, lw=lw, solid_capstyle="projecting")


def _grid_lines(ax: plt.Axes, grid: int, patch: int) -> None:
    for k in range(1, grid):
        ax.axhline(k * patch - 0.5, color="white", lw=0.4, alpha=0.7)
        ax.axvline(k * patch - 0.5, color="white", lw=0.4, alpha=0.7)


def mjp_illustration(image_path: Path, outputs: Sequence[Path], img_size: int, patch_size: int,
                     ratio: float = 0.4, seed: int = 0, crop_ratio: float = 0.875) -> dict[str, int]:
    """(a) the image as a patch grid, (b) all patches shuffled, (c) MJP at ``ratio``: the block-selected
    patches permuted among themselves and outlined (green), the rest untouched (the paper's overview
    figure, γ = 0.4). The shuffles are the project's own (``draw_jigsaw`` + ``shuffle_pixels``).

    Returns the grid size and the number of MJP-shuffled patches.
    """
    import torch
    from PIL import Image, UnidentifiedImageError

    from vitpe.data.transforms import eval_transform
    from vitpe.mjp.jigsaw import draw_jigsaw, shuffle_pixels

    path = Path(image_path)
    if path.is_dir():  # a dataset folder: its first image in sorted order (stable across runs)
        images = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if not images:
            raise DataError(f"{path}: no .png/.jpg image in this folder for the illustration")
        path = images[0]
    if not path.is_file():
        raise DataError(f"{path}: illustration image not found")
    try:
        picture = Image.open(path).convert("RGB")
    except (UnidentifiedImageError, OSError):
        raise DataError(f"{path}: not a readable image") from None
    # what the model sees at test time (Resize + CenterCrop), kept in [0, 1] for display
    to_tensor = eval_transform(img_size, crop_ratio, output="tensor")
    x = to_tensor(picture).unsqueeze(0)
    grid = img_size // patch_size
    np_rng = np.random.default_rng(seed)
    full = draw_jigsaw("patches", grid, np_rng=np_rng)
    mjp = draw_jigsaw("mjp", grid, ratio=ratio, py_rng=random.Random(seed), np_rng=np_rng)
    panels = [("(a) image $x$", x, None), ("(b) all patches shuffled", shuffle_pixels(x, full, patch_size), None),
              (f"(c) MJP, $\\gamma$ = {ratio:g}", shuffle_pixels(x, mjp, patch_size), mjp.unk[0].numpy())]
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.3), constrained_layout=True)
    for ax, (title, tensor, selected) in zip(axes, panels):
        ax.imshow(tensor[0].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
        _grid_lines(ax, grid, patch_size)
        if selected is not None:
            _outline(ax, selected.reshape(grid, grid), patch_size, color="#00c000", lw=2.0)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    save_figure(fig, outputs)
    return {"grid": grid, "shuffled": int(torch.as_tensor(mjp.unk).sum())}
