"""Gradient-attack figures: the reconstruction grid of the MJP paper's attack figure (ground truth,
then each model's reconstruction, for original and shuffled client inputs) and the
per-model PSNR distributions. Inputs: ``vitpe attack run``'s reconstructions and per-image tables."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vitpe.errors import DataError  # noqa: E402
from vitpe.report.figures import save_figure  # noqa: E402
from vitpe.report.names import attack_name, client_mode_name, experiment_name  # noqa: E402


def _reconstructions(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    from vitpe.attacks.outputs import read_reconstructions

    tensors, meta = read_reconstructions(path)
    return meta, {k: v.numpy() for k, v in tensors.items()}


def _hwc(image: np.ndarray) -> np.ndarray:
    return np.clip(np.transpose(image, (1, 2, 0)), 0, 1)


def reconstruction_grid(recon_files: Sequence[Path], attacks: Sequence[str], outputs: Sequence[Path],
                        max_images: int = 3) -> None:
    """Rows: image × client mode; columns: the image the client fed, then model × attack."""
    loaded = [_reconstructions(p) for p in recon_files]
    columns = [(meta, tensors, attack) for meta, tensors in loaded for attack in attacks
               if any(k.startswith(f"{attack}/") for k in tensors)]
    if not columns:
        raise DataError(f"none of the reconstruction files holds attacks {', '.join(attacks)}")
    meta0, tensors0 = loaded[0]
    modes = [m for m in meta0.get("clients", ["plain"]) if f"fed/{m}" in tensors0]
    count = min(max_images, len(meta0.get("images", [])) or tensors0["original"].shape[0])
    rows = [(i, mode) for i in range(count) for mode in modes]
    fig, axes = plt.subplots(len(rows), 1 + len(columns), figsize=(1.4 * (1 + len(columns)), 1.5 * len(rows)),
                             squeeze=False)
    for r, (i, mode) in enumerate(rows):
        axes[r, 0].imshow(_hwc(tensors0[f"fed/{mode}"][i]))
        axes[r, 0].set_ylabel(f"{client_mode_name(mode)}", fontsize=7)
        for c, (meta, tensors, attack) in enumerate(columns, start=1):
            key = f"{attack}/{mode}"
            if key in tensors:
                axes[r, c].imshow(_hwc(tensors[key][i]))
    for c, (meta, _, attack) in enumerate(columns, start=1):
        name = meta.get("experiment", "?")
        axes[0, c].set_title(f"{experiment_name(name)}\n{attack_name(attack)}", fontsize=7)
    axes[0, 0].set_title("ground truth\n(as fed)", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    save_figure(fig, outputs)


def psnr_distributions(tables: Sequence[Path], outputs: Sequence[Path]) -> None:
    """One panel per attack: per-image PSNR (vs the original image) per model, original vs shuffled."""
    import pandas as pd

    from vitpe.attacks.outputs import read_attack_table

    frames = [read_attack_table(path).assign(model=Path(path).parent.name) for path in tables]
    data = pd.concat(frames, ignore_index=True)
    attacks = sorted(data["attack"].unique())
    fig, axes = plt.subplots(1, len(attacks), figsize=(4.2 * len(attacks), 3.2), squeeze=False)
    for ax, attack in zip(axes[0], attacks):
        sub = data[data["attack"] == attack]
        models = list(dict.fromkeys(sub["model"]))
        modes = sorted(sub["mode"].unique())
        width = 0.8 / max(len(modes), 1)
        for j, mode in enumerate(modes):
            values = [sub[(sub["model"] == m) & (sub["mode"] == mode)]["psnr"].to_numpy() for m in models]
            pos = np.arange(len(models)) + (j - (len(modes) - 1) / 2) * width
            ax.boxplot(values, positions=pos, widths=width * 0.9, showfliers=False)
            for p, v in zip(pos, values):
                label = client_mode_name(mode) if p == pos[0] else None
                ax.scatter(np.full(len(v), p), v, s=8, alpha=0.7, label=label, color=f"C{j}")
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels([experiment_name(m) for m in models], rotation=30, ha="right", fontsize=7)
        ax.set_title(attack_name(attack))
        ax.set_ylabel("PSNR vs original (dB)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, outputs)
