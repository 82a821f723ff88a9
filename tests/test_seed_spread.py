"""scripts/seed_spread.py: the tuning tool trains and evaluates each seed on the tuning draw with the DAG's
commands, prints the table columns' mean ± std over seeds, reuses finished seeds, and pairs them with the
unchanged recipe's seeds (--compare) or with another experiment's under the same overrides (--versus)."""
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


@pytest.mark.slow  # a draw; two seeds trained and evaluated twice (changed, unchanged) through the CLI: ~45 s
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

    seed_spread.main([*argv, "--compare"])  # trains the unchanged recipe too, then pairs the seeds
    compared = capsys.readouterr().out
    assert [log.stat().st_mtime_ns for log in logs] == stamps
    unchanged = next(d for d in work.glob("deit_s-*") if d != run_dir)
    changed, base = (seed_metric(d, "deit_s", "shuffle", "consistency_l2") for d in (run_dir, unchanged))
    diffs = [a - b for a, b in zip(changed, base)]
    assert any(diffs)  # label smoothing changed the weights
    assert_delta(compared, "CLS L2", diffs)

    seed_spread.main(["mjp", *argv[1:], "--versus", "deit_s"])  # MJP minus DeiT-S, both with the overrides
    versus = capsys.readouterr().out
    assert [log.stat().st_mtime_ns for log in logs] == stamps  # DeiT-S's seeds reused
    assert "minus deit_s with the same overrides" in versus
    mjp = seed_metric(next(work.glob("mjp-*")), "mjp", "shuffle", "consistency_l2")
    assert_delta(versus, "CLS L2", [a - b for a, b in zip(mjp, changed)])


def assert_delta(printed: str, label: str, diffs: list[float]) -> None:
    """The line of ``label`` ends with the mean of the seed-paired ``diffs``, a CI around it and mean |Δ|."""
    line = next(line for line in printed.splitlines() if line.startswith(label))
    delta = line.split("Δ ")[1].split()
    assert delta[0] == f"{statistics.mean(diffs):+.3f}"
    assert float(delta[1].strip("[,")) <= round(statistics.mean(diffs), 3) <= float(delta[2].strip("]"))  # as printed
    assert line.endswith(f"mean |Δ| {statistics.mean(abs(d) for d in diffs):.3f}")


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
    (["deit_s", "--compare"], "--compare needs at least one --set"),
    (["deit_s", "--compare", "--versus", "mjp", "--set", "seed=1"], "give one"),
    (["deit_s", "--versus", "mae"], "--versus mae: not the same kind of experiment as deit_s"),
    (["deit_s", "--versus", "deit"], "--versus: no experiment 'deit'"),
])
def test_refuses_bad_input_before_any_work(tmp_path, params_file, argv, message):
    with pytest.raises(SystemExit, match=message):
        seed_spread.main([*argv, "--params", str(params_file), "--work", str(tmp_path / "work")])
    assert not (tmp_path / "work").exists()
