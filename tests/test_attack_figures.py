"""Attack figures on hand-written inputs: the grid's panels carry their table's PSNRs and the attack
budgets, the PSNR strips plot exactly the table's values, and the privacy-accuracy points and bars are
the means and sample stds over seeds of the per-seed JSONs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from vitpe.cli import main
from vitpe.errors import ConfigError, DataError
from vitpe.models.weights import save_tensors
from vitpe.report.attack_figures import attack_budget, grid_figure, metric_label, privacy_figure, psnr_figure

IMAGES = ["c00/a.png", "c01/b.png", "c02/c.png"]
MODES = ["plain", "shuffled"]
ATTACKS = {"inverting_gradients": 50.0, "pe_gradient": np.nan}  # the budget the table records (NaN: closed form)


def _attack_outputs(root: Path, exp: str, offset: float) -> tuple[Path, Path, pd.DataFrame]:
    """One model's per-image table (PSNR offset + 10 * attack + image + mode / 10) and reconstructions."""
    rows = [{"image": image, "label": i, "attack": attack, "mode": mode,
             "psnr": offset + 10 * a + i + m / 10 + 0.04, "info_iterations": budget,
             "info_restarts": 1.0 if budget == budget else np.nan}
            for m, mode in enumerate(MODES) for i, image in enumerate(IMAGES)
            for a, (attack, budget) in enumerate(ATTACKS.items())]
    table = pd.DataFrame(rows)
    folder = root / exp
    folder.mkdir(parents=True)
    table.to_csv(folder / "images.csv", index=False)
    torch.manual_seed(0)
    tensors = {"original": torch.rand(3, 3, 8, 8),
               **{f"fed/{m}": torch.rand(3, 3, 8, 8) for m in MODES},
               **{f"{a}/{m}": torch.rand(3, 3, 8, 8) for a in ATTACKS for m in MODES}}
    meta = {"attacks": list(ATTACKS), "clients": MODES, "experiment": exp, "images": IMAGES, "kind": "supervised"}
    save_tensors(tensors, folder / "reconstructions.safetensors", meta)
    return folder / "reconstructions.safetensors", folder / "images.csv", table


def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]


def test_grid_panels_show_the_tables_psnr_and_columns_the_budget(tmp_path):
    (r1, t1, table1), (r2, t2, table2) = (_attack_outputs(tmp_path, "deit_s", 10),
                                          _attack_outputs(tmp_path, "mjp", 20))
    fig = grid_figure([r1, r2], [t1, t2], list(ATTACKS), max_images=2)
    texts = _texts(fig)
    shown = [t for t in texts if t.endswith(" dB")]
    # 2 images x 2 modes rows, 2 models x 2 attacks columns: one PSNR per reconstruction panel
    assert len(shown) == 16
    for table in (table1, table2):
        for psnr in table[table["image"].isin(IMAGES[:2])]["psnr"]:
            assert f"{psnr:.1f} dB" in shown
    axes = np.array(fig.axes).reshape(4, 5)
    # row 1 is image 0 under the shuffled client; column 4 is MJP's PE-grad
    assert axes[1, 4].get_xlabel() == f"{20 + 10 + 0 + 0.1 + 0.04:.1f} dB"
    assert axes[0, 1].get_title() == "DeiT-S\nIG, 50 it." and axes[0, 4].get_title() == "MJP\nPE-grad, closed form"
    assert attack_budget(table1.assign(info_restarts=4.0), "inverting_gradients") == "50 it. × 4 restarts"


def test_grid_tables_must_match_the_reconstructions(tmp_path):
    (r1, t1, _), (_, t2, _) = _attack_outputs(tmp_path, "deit_s", 10), _attack_outputs(tmp_path, "mjp", 20)
    with pytest.raises(ConfigError, match="one per --recon"):
        grid_figure([r1], [t1, t2], ["inverting_gradients"])
    pd.read_csv(t2).query("attack != 'pe_gradient'").to_csv(t2, index=False)
    with pytest.raises(DataError, match="0 rows for attack pe_gradient"):
        grid_figure([tmp_path / "mjp" / "reconstructions.safetensors"], [t2], ["pe_gradient"])


def test_psnr_strips_plot_the_tables_values_and_means_without_boxes(tmp_path):
    tables = {exp: _attack_outputs(tmp_path, exp, off)[2] for exp, off in (("deit_s", 10), ("mjp", 20))}
    fig = psnr_figure([tmp_path / exp / "images.csv" for exp in tables])
    points = {c.get_gid(): c.get_offsets() for ax in fig.axes for c in ax.collections if c.get_gid()}
    means = {c.get_gid(): c.get_segments() for ax in fig.axes for c in ax.collections
             if (c.get_gid() or "").startswith("mean:")}
    for exp, table in tables.items():
        for (attack, mode), rows in table.groupby(["attack", "mode"]):
            xy = points[f"{attack}/{mode}/{exp}"]
            assert np.asarray(xy)[:, 1] == pytest.approx(rows["psnr"].to_numpy())
            (bar,) = means[f"mean:{attack}/{mode}/{exp}"]
            assert bar[:, 1] == pytest.approx([rows["psnr"].mean()] * 2)
            # the jitter stays within the model's slot and its mode's half
            assert np.ptp(np.asarray(xy)[:, 0]) < 0.4
    assert not any(ax.patches for ax in fig.axes)  # no boxes
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["original client", "shuffled client", "mean"]


def _write(root: Path, seed: int, exp: str, kind: str, values: dict) -> Path:
    path = root / f"seed{seed}" / exp / f"{kind}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"scale": "tiny", **values}))
    return path


IG, PE = "inverting_gradients_plain_psnr_mean", "pe_gradient_adaptive_shuffled_psnr_kept_mean"
PER_SEED = {"deit_s": ("classify", [69.0, 71.5, 70.0], [12.0, 12.6, 11.7], [56.0, 58.5, 57.2]),
            "mjp": ("classify", [74.0, 73.0, 76.5], [11.1, 12.0, 12.4], [25.0, 21.0, 27.5]),
            "mae": ("finetune", [80.0], [13.0], [60.0])}


def _privacy_inputs(root: Path) -> tuple[list[Path], list[Path]]:
    attacks, accuracy = [], []
    for exp, (kind, top1, ig, pe) in PER_SEED.items():
        for seed, values in enumerate(zip(top1, ig, pe)):
            attacks.append(_write(root, seed, exp, "attacks", {IG: values[1], PE: values[2], "seed": seed}))
            accuracy.append(_write(root, seed, exp, kind, {"top1": values[0], "top5": 100.0}))
    return attacks, accuracy


def test_privacy_points_are_seed_means_with_std_bars(tmp_path):
    attacks, accuracy = _privacy_inputs(tmp_path)
    fig, left_out = privacy_figure(attacks, accuracy, [IG, PE])
    assert left_out == {IG: [], PE: []}
    for ax, column in zip(fig.axes, (2, 3)):
        bars = {c.get_label(): c for c in ax.containers}
        assert sorted(bars) == ["DeiT-S", "MAE", "MJP"]
        for exp, name in (("deit_s", "DeiT-S"), ("mjp", "MJP"), ("mae", "MAE")):
            top1, leak = np.array(PER_SEED[exp][1]), np.array(PER_SEED[exp][column])
            line, _, cols = bars[name].lines
            assert line.get_xydata()[0] == pytest.approx([top1.mean(), leak.mean()])
            if len(top1) == 1:
                assert not bars[name].has_xerr and not bars[name].has_yerr and not cols
                continue
            (xseg,), (yseg,) = cols[0].get_segments(), cols[1].get_segments()
            assert xseg[:, 0] == pytest.approx([top1.mean() - top1.std(ddof=1), top1.mean() + top1.std(ddof=1)])
            assert yseg[:, 1] == pytest.approx([leak.mean() - leak.std(ddof=1), leak.mean() + leak.std(ddof=1)])
        assert "1-3 seeds" in ax.get_title() and ax.get_xlabel() == "clean top-1 (%)"
        assert not ax.texts  # the names are in the legend below, never over a point
        markers = {name: bars[name].lines[0].get_marker() for name in bars}
        assert len(set(markers.values())) == 3 and all(b.lines[0].get_markerfacecolor() == "none"
                                                       for b in bars.values())
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["DeiT-S", "MJP", "MAE"]
    # a model keeps its colour and marker in every panel
    styles = [{c.get_label(): (c.lines[0].get_color(), c.lines[0].get_marker()) for c in ax.containers}
              for ax in fig.axes]
    assert styles[0] == styles[1]
    assert fig.axes[1].get_ylabel() == "PE-grad adaptive, shuffled client:\nPSNR of kept patches (dB)"
    assert metric_label("clean_top1") == "clean_top1"


def test_privacy_refuses_unpaired_seeds_and_leaves_out_models_without_the_metric(tmp_path, capsys):
    attacks, accuracy = _privacy_inputs(tmp_path)
    unpaired = [p for p in accuracy if p.parts[-3:-1] != ("seed2", "mjp")]
    with pytest.raises(DataError, match=r"^mjp: attack metrics for seeds \[seed0, seed1, seed2\] but accuracy "
                                        r"for \[seed0, seed1\]"):
        privacy_figure(attacks, unpaired, [IG])
    with pytest.raises(DataError, match="a second accuracy metrics of mae in seed0"):
        privacy_figure(attacks, accuracy + [_write(tmp_path / "x", 0, "mae", "classify", {"top1": 1.0})], [IG])
    april = [_write(tmp_path, s, "mjp_april", "attacks", {"april_plain_psnr_mean": 30.0}) for s in range(3)]
    april_top1 = [_write(tmp_path, s, "mjp_april", "classify", {"top1": 70.0}) for s in range(3)]
    _, left_out = privacy_figure(attacks + april, accuracy + april_top1, [IG])
    assert left_out == {IG: ["mjp_april"]}
    with pytest.raises(DataError, match="no april_plain_psnr_mean, which the other seeds of mjp_april have"):
        privacy_figure(attacks + april[:2] + [_write(tmp_path / "y", 2, "mjp_april", "attacks", {IG: 1.0})],
                       accuracy + april_top1, ["april_plain_psnr_mean"])
    with pytest.raises(DataError, match="--metric nothing_mean: in none"):
        privacy_figure(attacks, accuracy, ["nothing_mean"])

    outs = [tmp_path / "fig" / "privacy.png", tmp_path / "fig" / "privacy.pdf"]
    argv = ["attack", "privacy-figure", "--attacks-metrics", *map(str, attacks + april), "--accuracy",
            *map(str, accuracy + april_top1), "--metric", IG, PE, "--out", *map(str, outs)]
    assert main(argv) == 0
    assert outs[0].read_bytes()[:4] == b"\x89PNG" and outs[1].read_bytes()[:4] == b"%PDF"
    assert "left out mjp_april" in capsys.readouterr().out
