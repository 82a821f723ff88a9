"""How long Snakemake takes to decide that a finished DAG has nothing to do (target: < 5 s).

Run after `make run`:  python benchmarks/bench_workflow.py
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(repeats: int = 3) -> int:
    snakemake = str(Path(sys.executable).parent / "snakemake")
    times, out = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run([snakemake, "-n", "results/tables/main.tex"], cwd=ROOT, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        out = proc.stdout + proc.stderr
    state = "nothing to be done" if "Nothing to be done" in out else "WORK PENDING (run `make run` first)"
    print(f"snakemake -n results/tables/main.tex: median {statistics.median(times):.2f} s "
          f"over {repeats} runs ({state})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
