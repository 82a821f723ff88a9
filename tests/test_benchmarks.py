"""`make bench`'s training-step benchmark runs and compares like with like: each config's project and
reference steps count the same FLOPs, and the ratio it prints lies within its rounds' range."""
from __future__ import annotations

import sys

import pytest

from conftest import ROOT, run

BENCH = ROOT / "benchmarks" / "bench_gpu.py"
CONFIGS = ("mae", "mae_plus", "adpe", "deit_s", "mjp", "finetune")


def _rows(stdout: str) -> dict[str, list[str]]:
    """Each config's printed row, split into its cells."""
    rows = {}
    for line in stdout.splitlines():
        cells = line.split()
        if cells and cells[0] in CONFIGS:
            rows[cells[0]] = cells
    return rows


@pytest.mark.parametrize("extra", [[], ["--compile", "--only", "deit_s"]], ids=["eager", "compiled"])
def test_bench_gpu_steps_the_project_and_the_reference_on_the_same_flops(extra):
    proc = run([sys.executable, str(BENCH), "--device", "cpu", "--small", "--steps", "1", "--rounds", "2",
                "--warmup", "1", *extra], cwd=ROOT)
    rows = _rows(proc.stdout)
    assert set(rows) == ({"deit_s"} if extra else set(CONFIGS)), proc.stdout
    for name, cells in rows.items():
        ratio, (low, high) = float(cells[4]), map(float, cells[5].split("-"))
        project_gflop, reference_gflop = float(cells[9]), float(cells[10])
        assert 0 < low <= ratio <= high, cells
        # the same architecture on both sides (MJP's DAL head and AdPE's ascent are a sliver of the step)
        assert project_gflop == pytest.approx(reference_gflop, rel=0.05), (name, cells)
    assert ("project compiled" in proc.stdout) == bool(extra)
