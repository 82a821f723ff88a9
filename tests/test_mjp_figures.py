"""MJP figures: inputs parsed to the right values, files written (PNG + PDF), bad inputs refused."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import MICRO_MODEL, NUM_CLASSES, make_image_folder, micro_params_file
from vitpe.cli import main
from vitpe.evaluate.pe_probe import probe_metrics
from vitpe.models import build_vit
from vitpe.models.pos_embed import sincos_2d_table
from vitpe.report.mjp_figures import cosine_similarity, pe_table, spectrum, sweep_points
from vitpe.models.weights import save_weights


def _is_figure(path: Path) -> bool:
    head = path.read_bytes()[:8]
    return head.startswith(b"\x89PNG") if path.suffix == ".png" else head.startswith(b"%PDF")


def test_shuffle_curves_and_spectra_from_metrics_json(tmp_path):
    for name, slope in (("deit_s", 60), ("mjp", 20)):
        (tmp_path / name).mkdir()
        sweep = {f"shuffled_top1_r{r:.2f}": 90 - slope * r for r in (0.9, 0.0, 0.3)}
        (tmp_path / name / "shuffle.json").write_text(json.dumps({**sweep, "consistency_l2": 1.0, "scale": "tiny"}))
    ratios, top1 = sweep_points(json.loads((tmp_path / "mjp" / "shuffle.json").read_text()))
    assert ratios == [0.0, 0.3, 0.9] and top1 == pytest.approx([90, 84, 72])
    outs = [tmp_path / "fig" / "sweep.png", tmp_path / "fig" / "sweep.pdf"]
    assert main(["report", "shuffle-curves", str(tmp_path / "deit_s" / "shuffle.json"),
                 str(tmp_path / "mjp" / "shuffle.json"), "--out", *map(str, outs)]) == 0
    assert all(_is_figure(p) for p in outs)

    probe = {"status": "ok", **probe_metrics(sincos_2d_table(4, 16)[1:].double().numpy(), 4)}
    (tmp_path / "sincos.json").write_text(json.dumps(probe))
    (tmp_path / "none.json").write_text(json.dumps({"status": "skipped", "reason": "no table"}))
    values = spectrum(probe)
    assert len(values) == 16 and values[0] == probe["sv_000"] and np.all(np.diff(values) <= 1e-12)
    assert spectrum({"status": "skipped"}) is None
    out = tmp_path / "spectra.png"
    assert main(["report", "pe-spectra", str(tmp_path / "sincos.json"), str(tmp_path / "none.json"),
                 "--labels", "sincos", "none", "--out", str(out)]) == 0
    assert _is_figure(out)


def test_similarity_maps_from_weights(tmp_path):
    paths = []
    for pe in ("learnable", "mjp", "none"):
        path = tmp_path / pe / "model.safetensors"
        save_weights(build_vit(MICRO_MODEL, NUM_CLASSES, pe, 0.0), path)
        paths.append(path)
    grid = MICRO_MODEL["img_size"] // MICRO_MODEL["patch_size"]
    table = pe_table(paths[1])
    assert table.shape == (grid * grid, MICRO_MODEL["embed_dim"])  # MJP: patch rows only, no CLS/unk row
    assert pe_table(paths[2]) is None
    sim = cosine_similarity(table)
    assert np.allclose(np.diag(sim), 1.0) and np.allclose(sim, sim.T)
    out = tmp_path / "sim.pdf"
    assert main(["report", "pe-similarity", *map(str, paths), "--positions", "0,0", "2,1", "--out", str(out)]) == 0
    assert _is_figure(out)
    assert main(["report", "pe-similarity", str(paths[0]), "--positions", "9,9", "--out", str(out)]) == 2
    assert main(["report", "pe-similarity", str(tmp_path / "absent.safetensors"), "--out", str(out)]) == 2


def test_mjp_illustration_from_a_real_image(tmp_path, capsys):
    root = make_image_folder(tmp_path / "data" / "imagenet", train_per_class=1, val_per_class=1)
    params = micro_params_file(tmp_path, tmp_path / "data")
    outs = [tmp_path / "mjp.png", tmp_path / "mjp.pdf"]
    argv = ["report", "mjp-illustration", "--params", str(params), "--image", str(root / "val" / "c03" / "0.png"),
            "--ratio", "0.4", "--out", *map(str, outs)]
    assert main(argv) == 0
    assert all(_is_figure(p) for p in outs)
    assert "of 16 patches shuffled" in capsys.readouterr().out
    argv[argv.index("--image") + 1] = str(tmp_path / "missing.png")
    assert main(argv) == 2 and "illustration image not found" in capsys.readouterr().err


def test_a_legend_below_lies_under_the_axes_and_within_the_figure():
    import matplotlib.pyplot as plt

    from vitpe.report.figures import legend_below

    fig, ax = plt.subplots(figsize=(5.6, 4.2), constrained_layout=True)
    for k in range(5):
        ax.plot([0, 1], [0, k], label=f"MJP, trunc-normal PE init (n={k})")
    legend_below(fig, ax)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend, axes = fig.legends[0].get_window_extent(renderer), ax.get_tightbbox(renderer)
    assert legend.y1 <= axes.y0 + 1  # under the axes and their tick labels, never over the data
    assert 0 <= legend.x0 and legend.x1 <= fig.bbox.x1  # every column fits across the figure
    plt.close(fig)
