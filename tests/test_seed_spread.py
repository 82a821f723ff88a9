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


def seed_metric(run_dir, experiment: str, source: str, key: str = "top1") -> list[float]:
    return [json.loads((run_dir / "metrics" / f"seed{seed}" / experiment / f"{source}.json").read_text())[key]
            for seed in (0, 1)]


def assert_summary(printed: str, label: str, values: list[float]) -> None:
    """The printed line of ``label`` holds the mean ± sample std of ``values``, then each value."""
    line = next(line for line in printed.splitlines() if line.startswith(label))
    mean, std = statistics.mean(values), statistics.stdev(values)
    assert line[len(label):].split()[:5] == [f"{mean:.1f}", "±", f"{std:.1f}", f"[{values[0]:.1f}", f"{values[1]:.1f}]"]


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
    assert_summary(printed, "Top-1 ", seed_metric(run_dir, "deit_s", "classify"))
    assert {"mCE", "IN-A", "IN-O", "Shuffled"} <= {line.split()[0] for line in printed.splitlines()}

    logs = sorted(run_dir.glob("seed*/deit_s/supervised.log"))
    stamps = [log.stat().st_mtime_ns for log in logs]
    seed_spread.main(argv)  # the same overrides: finished seeds are reused, not retrained
    assert [log.stat().st_mtime_ns for log in logs] == stamps
    assert capsys.readouterr().out == printed


@pytest.mark.slow  # pretrains, fine-tunes, probes and evaluates two seeds through the CLI: about 40 s
def test_an_encoder_is_pretrained_finetuned_probed_and_evaluated(tmp_path, params_file, capsys):
    work = tmp_path / "work"
    seed_spread.main(["mae", "--params", str(params_file), "--seeds", "0", "1", "--max-steps", "2",
                      "--work", str(work)])
    printed = capsys.readouterr().out
    run_dir = next(work.glob("mae-*"))
    assert_summary(printed, "Fine-tune top-1", seed_metric(run_dir, "mae", "finetune"))
    assert_summary(printed, "Linear probe top-1", seed_metric(run_dir, "mae", "linprobe"))
    assert "Val. MIM loss" in printed


@pytest.mark.parametrize("argv, message", [
    (["deit_s", "--set", "scale=smoke"], "scale is 'smoke'"),
    (["deit", "--seeds", "0"], "no experiment 'deit' under `supervised:`"),
])
def test_refuses_bad_input_before_any_work(tmp_path, params_file, argv, message):
    with pytest.raises(SystemExit, match=message):
        seed_spread.main([*argv, "--params", str(params_file), "--work", str(tmp_path / "work")])
    assert not (tmp_path / "work").exists()
