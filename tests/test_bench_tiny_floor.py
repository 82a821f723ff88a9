"""The tiny compute-floor benchmark measures exactly the DAG's training jobs, with their recipes' step
counts, and its floor is its own FLOPs at its own measured best rate."""
from __future__ import annotations

import re
import sys

import pytest
import yaml

from conftest import ROOT, copy_workflow, run
from vitpe.config import load_params

BENCH = ROOT / "benchmarks" / "bench_tiny_floor.py"
KINDS = ("supervised", "pretrain", "finetune", "linprobe")


def test_tiny_floor_covers_the_dags_training_jobs_and_adds_up(tmp_path):
    cwd = copy_workflow(tmp_path, yaml.safe_load((ROOT / "params.yaml").read_text()))
    params = load_params(ROOT / "params.yaml")
    dry = run(["snakemake", "-n", "--cores", "2", "results/tables/main.tex"], cwd).stdout
    planned = set(re.findall(r"results/checkpoints/tiny/seed0/(\w+)/(\w+)/model\.safetensors", dry))

    out = run([sys.executable, str(BENCH), "--steps", "1"], cwd=ROOT).stdout
    peak = float(re.search(r"best fp32 rate \(1024³ matmul\): ([\d.]+) GFLOP/s", out).group(1))
    rows = {(cells[0], cells[1]): cells for line in out.splitlines() if (cells := line.split()) and cells[0] in KINDS}
    assert set(rows) == planned, out

    embedded, scale = params["data"]["embedded"], params["scales"]["tiny"]
    images = embedded["num_classes"] * embedded["train_per_class"]
    floor = 0.0
    for (kind, name), cells in rows.items():
        steps, batch, gflop, job_floor = int(cells[2]), int(cells[3]), float(cells[4]), float(cells[9])
        if kind == "supervised":
            recipe = {**scale["supervised"], **params["supervised"][name].get("recipe", {})}
        else:  # finetune and linprobe come resolved (`inherit: supervised` expanded)
            recipe = scale["pretrain"]["recipe"] if kind == "pretrain" else scale[kind]
        assert (steps, batch) == (recipe["epochs"] * (images // recipe["batch_size"]), recipe["batch_size"]), cells
        assert job_floor == pytest.approx(steps * gflop / peak, abs=0.06, rel=0.01), cells
        floor += job_floor
    # the probe's encoder is frozen: a forward per image, a third of a fine-tuning step's forward + backward
    for name in params["experiments"]["pretrain"]:
        probe, finetune = rows[("linprobe", name)], rows[("finetune", name)]
        per_image = [float(cells[4]) / int(cells[3]) for cells in (probe, finetune)]
        assert per_image[0] == pytest.approx(per_image[1] / 3, rel=0.1), (probe, finetune)
    # rows are rounded to 0.1 s and the total to 0.1 min: each may be off by half of that
    seeds, total = len(scale["seeds"]), float(re.search(r"([\d.]+) min at the best rate", out).group(1))
    assert total == pytest.approx(floor * seeds / 60, abs=0.05 + 0.05 * len(rows) * seeds / 60), out
