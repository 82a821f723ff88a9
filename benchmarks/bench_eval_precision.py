"""What bf16 autocast does to the reported evaluation and attack metrics: each trained tiny classifier
evaluated (and, with ``--attacks``, attacked) in fp32 and under bf16 autocast, the change of every
headline metric beside its spread over seeds.

The workflow autocasts evaluations on CUDA only (recipe key ``eval_amp``); this measures the same bf16
rounding on the CPU (``torch.autocast("cpu")``: bf16 matmul inputs with fp32 accumulation, as on CUDA;
CPU autocast keeps fewer ops such as layer_norm in fp32, so its change is if anything larger). A change
well inside the seed spread is what lets the paper recipes evaluate in bf16 (docs/FIDELITY.md row 75).
The attacks run whole under autocast (the client's update and the reconstruction).

Run after training the models (`make run`, or their checkpoints alone):
    python benchmarks/bench_eval_precision.py [--experiments deit_s mjp ...] [--seeds 0 1 2] [--attacks]
"""
from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from vitpe.attacks.runner import attack_settings, run_attacks
from vitpe.config import load_params
from vitpe.evaluate.common import load_trained
from vitpe.evaluate.suite import evaluate_suite
from vitpe.runs import stage_run

ROOT = Path(__file__).resolve().parents[1]
#: the supervised headline metrics a forward pass produces (the PE probe reads weights only)
METRICS = {"classify": ("top1",), "robustness": ("mce", "a_top1", "o_aupr"),
           "shuffle": ("shuffled_top1_r0.50", "consistency_agreement", "consistency_l2")}
PROTOCOL_STAGES = ("finetune", "linprobe")
ATTACK_SUFFIX = "_psnr_mean"  # every attack's PSNR columns (plain, shuffled, kept, moved)


def _precision(bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def evaluate(params: dict, stage: str, experiment: str, weights: Path, bf16: bool) -> dict[str, float]:
    kinds = list(METRICS) if stage == "supervised" else ["classify"]
    with tempfile.TemporaryDirectory() as out, _precision(bf16):
        results = evaluate_suite(params, stage_run(params, stage, experiment), weights, Path(out), kinds, "cpu")
    return {f"{kind}.{key}": float(results[kind][key]) for kind in kinds for key in METRICS[kind]}


def attack(params: dict, stage: str, experiment: str, weights: Path, bf16: bool) -> dict[str, float]:
    run = stage_run(params, stage, experiment)
    model, device = load_trained(run, weights, "cpu")
    kind = "supervised" if stage == "supervised" else "finetuned"
    with tempfile.TemporaryDirectory() as out, _precision(bf16):
        folder = Path(out)
        summary = run_attacks(model, run, kind, attack_settings(params), device, folder / "a.json",
                              folder / "a.csv", folder / "a.safetensors", run.dal.weight if run.dal else 0.0,
                              log=lambda _: None)
    return {f"attacks.{k}": float(v) for k, v in summary.items() if k.endswith(ATTACK_SUFFIX)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--experiments", nargs="+", help="default: experiments.supervised and .pretrain")
    parser.add_argument("--seeds", nargs="+", type=int, help="default: the scale's seeds")
    parser.add_argument("--attacks", action="store_true",
                        help="attack the models of attacks.models / attacks.finetuned instead of evaluating them")
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = load_params(args.params)
    seeds = args.seeds or base["scales"][base["scale"]]["seeds"]
    jobs = [("supervised", e) for e in base["experiments"]["supervised"]]
    jobs += [(stage, e) for e in base["experiments"]["pretrain"] for stage in PROTOCOL_STAGES]
    if args.attacks:
        jobs = [("supervised", e) for e in base["attacks"]["models"]]
        jobs += [("finetune", e) for e in base["attacks"]["finetuned"]]
    if args.experiments:
        jobs = [(stage, e) for stage, e in jobs if e in args.experiments]
    measure = attack if args.attacks else evaluate
    print(f"{'model':32} {'metric':50} {'fp32 mean':>10} {'seed std':>9} {'bf16-fp32 per seed':>26} "
          f"{'max |d|/std':>11}")
    worst, seconds = 0.0, {False: 0.0, True: 0.0}
    for stage, experiment in jobs:
        per_seed: dict[str, list[tuple[float, float]]] = {}
        for seed in seeds:
            weights = ROOT / f"results/checkpoints/{base['scale']}/seed{seed}/{stage}/{experiment}/model.safetensors"
            if not weights.is_file():
                print(f"{stage}/{experiment} seed {seed}: no checkpoint ({weights}); skipped")
                continue
            params = load_params(args.params, [f"seed={seed}"])
            values = {}
            for bf16 in (False, True):
                start = time.perf_counter()
                values[bf16] = measure(params, stage, experiment, weights, bf16)
                seconds[bf16] += time.perf_counter() - start
            for key in values[False]:
                per_seed.setdefault(key, []).append((values[False][key], values[True][key]))
        for key, pairs in per_seed.items():
            fp32 = [a for a, _ in pairs]
            deltas = [b - a for a, b in pairs]
            std = statistics.stdev(fp32) if len(fp32) > 1 else float("nan")
            ratio = max(abs(d) for d in deltas) / std if std > 0 else (0.0 if not any(deltas) else float("inf"))
            worst = worst if math.isnan(ratio) else max(worst, ratio)
            shown = " ".join(f"{d:+.3f}" for d in deltas)
            print(f"{stage + '/' + experiment:32} {key:50} {statistics.mean(fp32):10.3f} {std:9.3f} {shown:>26} "
                  f"{ratio:11.2f}")
    print(f"largest |bf16 - fp32| over the seed std: {worst:.2f}; time fp32 {seconds[False]:.1f} s, "
          f"bf16 (CPU) {seconds[True]:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
