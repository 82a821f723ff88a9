"""Seed spread of one tiny recipe on a tuning draw of the embedded data, without touching results/.

    python scripts/seed_spread.py deit_s --seeds 0 1 2 3 4 --set scales.tiny.supervised.epochs=90
    python scripts/seed_spread.py mae --set scales.tiny.linprobe.epochs=30
    python scripts/seed_spread.py deit_s --set scales.tiny.supervised.compile=true --compare
    python scripts/seed_spread.py mjp --versus deit_s --set scales.tiny.supervised.mixup_prob=1.0

Generates the draw ``--data-seed`` of the embedded data under ``--work`` (default 1: tune on it, report
on draw 0, docs/TINY_SCALE.md; one folder per data.embedded setting), trains and evaluates the
experiment once per seed with the commands the DAG runs (one thread each, ``--jobs`` at a time): a
`supervised:` model with `vitpe train supervised` and `vitpe eval suite`, a `pretrain:` one with
`vitpe train pretrain`, `finetune`, `linprobe` and `vitpe eval encoder`. Then it prints each headline
column of the model's tables (MJP or AdPE; `vitpe.report.headline.in_headline`) as mean ± std over
seeds with the per-seed values, marking stds above ``--target``. With ``--compare`` it also runs the
recipe without the ``--set`` overrides and prints, per column, the seed-paired difference (changed minus
unchanged, same seed) with its 95 % Student-t CI, as the claims table does, and the mean |difference|.
With ``--versus EXP`` it runs EXP with the same overrides instead and pairs the experiment with it: a
claims-table row (MJP minus DeiT-S, say) measured under a changed recipe. Runs are keyed by their
overrides, so a rerun reuses finished seeds.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from vitpe.config import load_params
from vitpe.errors import VitpeError
from vitpe.report.claims import difference_text
from vitpe.report.headline import in_headline
from vitpe.report.statistics import pair_by_seed, paired_difference, summarize
from vitpe.report.tables import Column, Study, adpe_studies, mjp_studies, seed_values


def digest(value: object) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()[:10]


def data_folder(embedded: dict) -> str:
    """The draw's folder, named by its generator settings: overrides of data.embedded get their own."""
    return f"data-seed{embedded['seed']}-{digest({k: v for k, v in embedded.items() if k != 'root'})}"


def run_key(experiment: str, sets: list[str], max_steps: int | None) -> str:
    """A folder name per experiment and overrides: reruns with the same ones reuse finished seeds."""
    return f"{experiment}-{digest([sets, max_steps])}"


def run_vitpe(args: list[str], log: Path) -> None:
    """Run one vitpe command on one thread, its output in ``log``; exit naming the log on failure."""
    print(f"seed_spread: vitpe {args[0]} {args[1]} (log: {log})", file=sys.stderr, flush=True)
    with log.open("w") as out:
        done = subprocess.run([sys.executable, "-m", "vitpe", *args], stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode:
        sys.exit(f"seed_spread: `vitpe {args[0]} {args[1]}` failed (exit {done.returncode}); see {log}")


def set_args(params_file: str, sets: list[str]) -> list[str]:
    return ["--params", params_file, *[arg for kv in sets for arg in ("--set", kv)]]


def train_and_evaluate(experiment: str, seed: int, common: list[str], run_dir: Path, max_steps: int | None,
                       pretraining: bool) -> None:
    """One seed: weights under run_dir/seed<N>/<exp>/, metrics where the report reads them
    (run_dir/metrics/seed<N>/<exp>/); ``common``: the --params/--set arguments of every command.
    A supervised model is trained and evaluated as rule eval_supervised does; an encoder is pretrained,
    fine-tuned and linear-probed, then evaluated as rule eval_encoder does."""
    work = run_dir / f"seed{seed}" / experiment
    metrics = run_dir / "metrics" / f"seed{seed}" / experiment
    if (metrics / ("linprobe.json" if pretraining else "robustness.json")).exists():
        return  # both evaluations write every file or none
    work.mkdir(parents=True, exist_ok=True)
    common = [*common, "--set", f"seed={seed}", "--experiment", experiment]
    steps = [] if max_steps is None else ["--max-steps", str(max_steps)]

    def train(stage: str, *extra: str) -> Path:
        run_vitpe(["train", stage, *common, "--out", str(work / stage), *steps, *extra], work / f"{stage}.log")
        return work / stage / "model.safetensors"

    if not pretraining:
        run_vitpe(["eval", "suite", *common, "--weights", str(train("supervised")), "--out-dir", str(metrics)],
                  work / "eval.log")
        return
    pretrained = train("pretrain")
    encoder = ["--pretrained", str(pretrained.with_name("encoder.safetensors"))]
    finetune, linprobe = train("finetune", *encoder), train("linprobe", *encoder)
    run_vitpe(["eval", "encoder", *common, "--pretrained", str(pretrained), "--log", str(pretrained.with_name(
        "log.jsonl")), "--finetune", str(finetune), "--linprobe", str(linprobe), "--out-dir", str(metrics)],
        work / "eval.log")


def report(metrics_dir: Path, experiment: str, seeds: list[int], target: float, studies: tuple[Study, ...],
           baseline: tuple[Path, str] | None = None) -> list[str]:
    """One line per headline column of ``studies``: mean ± std [per-seed values], ``*`` where the std
    exceeds ``target``; with ``baseline`` (the metrics folder and experiment to subtract: the same
    experiment without the overrides, or another one with them) also Δ mean [95 % CI] of the
    seed-paired differences and their mean |Δ|."""
    lines = []
    columns = [c for study in studies for c in study.columns if in_headline(c)]
    width = max(len(c.label) for c in columns)

    def values(root: Path, name: str, column: Column) -> dict[int, float]:
        return seed_values(root, seeds, name, column.source, column.key or column.metric, column.scale)

    for column in columns:
        changed = values(metrics_dir, experiment, column)
        summary = summarize(changed)
        if summary is None:
            continue
        fmt = f".{column.digits}f"
        line = (f"{column.label:<{width}} {summary.mean:8{fmt}} ± {summary.std or 0:{fmt}}"
                f"  [{' '.join(f'{v:{fmt}}' for v in summary.values)}]{' *' if (summary.std or 0) > target else ''}")
        if baseline is not None:
            _, a, b = pair_by_seed(changed, values(*baseline, column))
            if a:
                diff = paired_difference(a, b)
                line += (f"  Δ {difference_text(diff, column.digits)}"
                         f"  mean |Δ| {statistics.fmean(abs(x - y) for x, y in zip(a, b)):{fmt}}")
        lines.append(line)
    return lines


def draw_sets(args: argparse.Namespace, overrides: list[str]) -> list[str]:
    """The --set arguments of every command: the tuning draw, then ``overrides``."""
    return [f"data.embedded.seed={args.data_seed}", *overrides]


def tuning_params(args: argparse.Namespace, overrides: list[str]) -> dict:
    """params.yaml on the tuning draw with ``overrides``; exits naming the file unless its scale is tiny."""
    try:
        params = load_params(args.params, draw_sets(args, overrides))
    except VitpeError as exc:
        sys.exit(f"seed_spread: {exc}")
    if params["scale"] != "tiny":
        sys.exit(f"seed_spread: {args.params}: scale is {params['scale']!r}; the tuning draw is the tiny scale's")
    return params


def is_pretraining(params: dict, experiment: str, source: str) -> bool:
    """Whether ``experiment`` is under `pretrain:` (else `supervised:`); exits if it is under neither."""
    if experiment in params["pretrain"]:
        return True
    if experiment not in params["supervised"]:
        sys.exit(f"seed_spread: {source}: no experiment {experiment!r} under `supervised:` or `pretrain:`"
                 f" (defined: {', '.join([*params['supervised'], *params['pretrain']])})")
    return False


def measure(args: argparse.Namespace, experiment: str, overrides: list[str], pretraining: bool) -> Path:
    """Generate the draw and run every seed of ``experiment`` (of the kind main checked) with ``overrides``:
    the run folder."""
    params = tuning_params(args, overrides)
    data_root = args.work / data_folder(params["data"]["embedded"])
    sets = [*draw_sets(args, overrides), f"data.embedded.root={data_root}"]
    if not (data_root / "manifest.json").exists():
        args.work.mkdir(parents=True, exist_ok=True)
        run_vitpe(["data", "synth", *set_args(args.params, sets), "--layout", "embedded"],
                  args.work / f"{data_root.name}.log")
    run_dir = args.work / run_key(experiment, sets, args.max_steps)
    common = set_args(args.params, sets)
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda seed: train_and_evaluate(experiment, seed, common, run_dir, args.max_steps,
                                                      pretraining), args.seeds))
    return run_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", help="a name under `supervised:` or `pretrain:` in params.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--data-seed", type=int, default=1, help="the draw of the embedded data (default 1)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="a params override, as `vitpe --set` (repeatable)")
    parser.add_argument("--compare", action="store_true",
                        help="also run the recipe without the overrides; print the seed-paired differences")
    parser.add_argument("--versus", metavar="EXP",
                        help="also run EXP with the same overrides; print the seed-paired differences to it")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--work", type=Path, default=Path("results/tuning"),
                        help="scratch folder for the draw and the runs (default: results/tuning)")
    parser.add_argument("--jobs", type=int, default=2, help="seeds trained at once, one thread each")
    parser.add_argument("--max-steps", type=int, help="cut each training to N steps (a quick check of the tool)")
    parser.add_argument("--target", type=float, default=2.0, help="mark stds above this (default 2 points)")
    args = parser.parse_args(argv)
    if args.compare and not args.sets:
        sys.exit("seed_spread: --compare needs at least one --set KEY=VALUE: it compares the changed recipe "
                 "with the unchanged one")
    if args.compare and args.versus:
        sys.exit("seed_spread: --compare and --versus each set the baseline of the differences; give one")

    params = tuning_params(args, args.sets)
    pretraining = is_pretraining(params, args.experiment, args.params)
    if args.versus and is_pretraining(params, args.versus, "--versus") != pretraining:
        sys.exit(f"seed_spread: --versus {args.versus}: not the same kind of experiment as {args.experiment} "
                 "(one under `supervised:`, the other under `pretrain:`): their tables differ")

    run_dir = measure(args, args.experiment, args.sets, pretraining)
    baseline = None
    if args.compare:
        baseline = (measure(args, args.experiment, [], pretraining) / "metrics", args.experiment)
        against = "minus the unchanged recipe"
    elif args.versus:
        baseline = (measure(args, args.versus, args.sets, pretraining) / "metrics", args.versus)
        against = f"minus {args.versus} with the same overrides"
    print(f"{args.experiment}, data draw {args.data_seed}, seeds {args.seeds}, overrides {args.sets or 'none'}"
          f" ({run_dir}):")
    if baseline is not None:
        print(f"Δ: {against}, seed-paired ({baseline[0].parent})")
    studies = adpe_studies(params) if pretraining else mjp_studies(params)
    print("\n".join(report(run_dir / "metrics", args.experiment, args.seeds, args.target, studies, baseline)))


if __name__ == "__main__":
    main()
