"""The compute floor of the tiny DAG's training: its optimizer steps' FLOPs against one core's best rate.

Every training job of the default tiny DAG (each supervised experiment and APRIL variant, and each
pretraining, fine-tuning and linear probe, once per seed of ``scales.tiny.seeds``) runs one real step
of its recipe's batch on synthetic inputs, through the trainer's model, loss and optimizer (bench_gpu's
project side). Each step is counted (FLOPs, forward and backward, bench_gpu.count_flops) and timed
(median after warm-up, one thread, as the DAG runs its jobs). A job's steps are its recipe's epochs
times the full batches of the embedded training set.

The floor is those FLOPs at the core's best fp32 rate: the fastest of a few 1024³ matrix products, the
shape BLAS runs best. No kernel choice, compiler or process layout steps these models faster than that
on this core, so the floor bounds what any engineering of the same recipes can reach. It leaves out
start-up, evaluation, attacks and transfer, which come on top.

    python benchmarks/bench_tiny_floor.py [--steps N] [--threads T]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from bench_adpe import interleaved_medians  # the sibling benchmarks (the script's folder is on sys.path)
from bench_gpu import Options, count_flops, project_side, timed
from bench_train import stand_in_image_folder
from vitpe.config import apply_overrides, load_params
from vitpe.models.weights import save_tensors
from vitpe.runs import PretrainRun, SupervisedRun, encoder_run, num_classes, pretrain_run, supervised_run
from vitpe.train.pretrain import build_autoencoder

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Job:
    kind: str  # supervised | pretrain | finetune | linprobe
    name: str
    run: SupervisedRun | PretrainRun


@dataclass(frozen=True)
class Cost:
    steps: int  # optimizer steps of one job
    flops: float  # per step
    median_s: float  # per step

    @property
    def job_s(self) -> float:
        return self.steps * self.median_s


def gemm_gflops(size: int = 1024, repeats: int = 20) -> float:
    """The core's best fp32 rate: the fastest of ``repeats`` size³ matrix products, in GFLOP/s."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=gen), torch.randn(size, size, generator=gen)
    timer = timed(lambda: a @ b, torch.device("cpu"))
    timer()  # warm-up
    return 2 * size ** 3 / min(timer() for _ in range(repeats)) / 1e9


def tiny_jobs(params: dict, encoder_dir: Path) -> list[Job]:
    """The training jobs of one seed of the default tiny DAG, each with the run the trainer builds."""
    supervised = [*params["experiments"]["supervised"], *params["attacks"]["april_models"]]
    jobs = [Job("supervised", name, supervised_run(params, name)) for name in dict.fromkeys(supervised)]
    for name in params["experiments"]["pretrain"]:
        run = pretrain_run(params, name)
        encoder = encoder_dir / f"{name}.safetensors"  # the linear probe freezes it: its backward stops at the head
        save_tensors(build_autoencoder(run).encoder_state_dict(), encoder)
        jobs += [Job("pretrain", name, run),
                 Job("finetune", name, encoder_run(params, name, "finetune", pretrained=str(encoder))),
                 Job("linprobe", name, encoder_run(params, name, "linprobe", pretrained=str(encoder)))]
    return jobs


def measure(job: Job, train_images: int, opts: Options, train_dir: Path) -> Cost:
    recipe = job.run.recipe
    _, step = project_side(job.run, recipe.batch_size, opts, train_dir)
    flops = count_flops(step)
    median = interleaved_medians({"step": timed(step, opts.device)}, opts.steps, rounds=1, warmup=opts.warmup)["step"]
    return Cost(recipe.epochs * (train_images // recipe.batch_size), flops, median)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--steps", type=int, default=10, help="timed steps per job (after 2 warm-up steps)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the DAG runs each job on one)")
    parser.add_argument("--cores", type=int, default=2, help="cores the DAG's jobs share, for the wall floor")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = apply_overrides(load_params(args.params), ["scale=tiny"])
    embedded, seeds = params["data"]["embedded"], params["scales"]["tiny"]["seeds"]
    train_images = embedded["num_classes"] * embedded["train_per_class"]
    opts = Options(torch.device("cpu"), amp=False, compile=False, steps=args.steps, rounds=1, warmup=2)
    peak = gemm_gflops()
    print(f"torch {torch.__version__}, {args.threads} thread(s); best fp32 rate (1024³ matmul): {peak:.1f} GFLOP/s; "
          f"{train_images} training images, {len(seeds)} seeds")
    print(f"{'job':<10} {'experiment':<22} {'steps':>6} {'batch':>6} {'GFLOP/step':>11} {'ms/step':>8} "
          f"{'GFLOP/s':>8} {'of best':>8} {'steps s':>8} {'floor s':>8}")
    measured = floor = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        # the trainers need an image folder to set up their loaders (never read here)
        train_dir = stand_in_image_folder(Path(tmp) / "images", num_classes(params), 16, size=8)
        (Path(tmp) / "encoders").mkdir()
        for job in tiny_jobs(params, Path(tmp) / "encoders"):
            cost = measure(job, train_images, opts, train_dir)
            rate = cost.flops / cost.median_s / 1e9
            job_floor = cost.steps * cost.flops / (peak * 1e9)
            measured += cost.job_s * len(seeds)
            floor += job_floor * len(seeds)
            print(f"{job.kind:<10} {job.name:<22} {cost.steps:>6} {job.run.recipe.batch_size:>6} "
                  f"{cost.flops / 1e9:>11.3f} {cost.median_s * 1e3:>8.2f} {rate:>8.1f} {rate / peak:>8.0%} "
                  f"{cost.job_s:>8.1f} {job_floor:>8.1f}", flush=True)
    print(f"all training jobs x {len(seeds)} seeds: steps {measured / 60:.1f} min of job time as measured, "
          f"{floor / 60:.1f} min at the best rate: at least {floor / 60 / args.cores:.1f} min of wall time on "
          f"{args.cores} cores before any start-up, evaluation, attack or transfer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
