"""scripts/seed_spread.py: the tuning tool trains and evaluates each seed on the tuning draw with the DAG's
commands, prints the table columns' mean ± std over seeds, and reuses finished seeds."""
from __future__ import annotations

import importlib.util
import json
import statistics

import pytest
import yaml

from conftest import ROOT, micro_params

spec = importlib.util.spec_from_file_location("seed_spread", ROOT / "scripts" / "seed_spread.py")
seed_spread = importlib.util.module_from_spec(spec)
spec.loader.exec_module(seed_spread)


@pytest.fixture
def params_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(micro_params(), sort_keys=False))
    return path


@pytest.mark.slow  # generates a draw, trains and evaluates two seeds through the CLI: about 30 s
def test_spread_over_seeds_on_the_tuning_draw(tmp_path, params_file, capsys):
    work = tmp_path / "work"
    argv = ["deit_s", "--params", str(params_file), "--seeds", "0", "1", "--max-steps", "2", "--work", str(work),
            "--set", "scales.tiny.supervised.smoothing=0.0"]
    seed_spread.main(argv)
    printed = capsys.readouterr().out
    manifest = json.loads((next(work.glob("data-seed1-*")) / "manifest.json").read_text())
    assert manifest["params"]["seed"] == 1  # the tuning draw, not the reported one

    run_dir = next(work.glob("deit_s-*"))
    top1 = [json.loads((run_dir / "metrics" / f"seed{s}" / "deit_s" / "classify.json").read_text())["top1"]
            for s in (0, 1)]
    line = next(line for line in printed.splitlines() if line.startswith("Top-1 "))
    mean, std = statistics.mean(top1), statistics.stdev(top1)
    assert line.split()[1:4] == [f"{mean:.1f}", "±", f"{std:.1f}"]
    assert f"[{top1[0]:.1f} {top1[1]:.1f}]" in line
    assert {"mCE", "IN-A", "IN-O", "Shuffled"} <= {line.split()[0] for line in printed.splitlines()}

    logs = sorted(run_dir.glob("seed*/deit_s/train.log"))
    stamps = [log.stat().st_mtime_ns for log in logs]
    seed_spread.main(argv)  # the same overrides: finished seeds are reused, not retrained
    assert [log.stat().st_mtime_ns for log in logs] == stamps
    assert capsys.readouterr().out == printed


@pytest.mark.parametrize("argv, message", [
    (["deit_s", "--set", "scale=smoke"], "scale is 'smoke'"),
    (["deit", "--seeds", "0"], "no experiment 'deit' under `supervised:`"),
])
def test_refuses_bad_input_before_any_work(tmp_path, params_file, argv, message):
    with pytest.raises(SystemExit, match=message):
        seed_spread.main([*argv, "--params", str(params_file), "--work", str(tmp_path / "work")])
    assert not (tmp_path / "work").exists()
