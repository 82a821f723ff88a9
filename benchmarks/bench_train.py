"""Training throughput: optimizer steps/s of the tiny DeiT (batch 64) and of ViT-S/16 (batch 8, 224 px),
timed after warm-up on synthetic batches through the real step (Mixup, loss, backward, clip, AdamW);
the cost of an MJP step (block shuffle, unknown PE, DAL) relative to a DeiT-S step of the same size
(ratio of median step times, interleaved in one run); and images/s of the tiny-scale train loader
(RandAugment, random erasing) on the embedded ImageFolder (or a generated stand-in).

    python benchmarks/bench_train.py [--device cpu|cuda] [--steps N] [--mjp-scale tiny|paper]
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vitpe.config import apply_overrides, load_params

from vitpe.runs import SupervisedRun, supervised_run, with_recipe
from vitpe.train.data import build_train_data
from vitpe.train.distributed import DistEnv
from vitpe.train.engine import StepRunner
from vitpe.train.supervised import build_supervised

ROOT = Path(__file__).resolve().parents[1]


def step_times(run: SupervisedRun, batch: int, device: torch.device, steps: int, warmup: int) -> list[float]:
    """Seconds per optimizer step of the run's real loss (Mixup, jigsaw/DAL where configured, backward,
    clip, AdamW), after warm-up, at an epoch past the LR warm-up (so MJP's shuffle is live)."""
    run = with_recipe(run, batch_size=batch, accum_steps=1, num_workers=0)
    recipe = run.recipe
    env = DistEnv(rank=0, world_size=1, local_rank=0, device=device)
    with tempfile.TemporaryDirectory() as tmp:
        train_dir = stand_in_image_folder(Path(tmp), run.num_classes, max(1, batch // run.num_classes + 1),
                                          run.model.img_size)
        setup = build_supervised(dataclasses.replace(run, train_dir=train_dir), env)
    runner = StepRunner(setup.forward_module, setup.optimizer, setup.loss_fn, accum_steps=1,
                        clip_grad=recipe.clip_grad, amp=recipe.amp, env=env)
    size = run.model.img_size
    gen = torch.Generator().manual_seed(0)
    batches = [[torch.randn(batch, 3, size, size, generator=gen), torch.randint(0, run.num_classes, (batch,), generator=gen)]
               for _ in range(2)]
    epoch = recipe.warmup_epochs
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        runner([batches[i % 2]], epoch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times[warmup:]


def stand_in_image_folder(root: Path, classes: int, per_class: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c:02d}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"c{c:02d}/{i}.png")
    return root


def loader_images_per_second(run: SupervisedRun, batches: int) -> tuple[float, str]:
    recipe = run.recipe
    with tempfile.TemporaryDirectory() as tmp:
        root, source = run.train_dir, str(run.train_dir)
        if not root.is_dir():
            root = stand_in_image_folder(Path(tmp), run.num_classes, 100, run.model.img_size)
            source = "generated stand-in (embedded dataset not found)"
        data = build_train_data(root, recipe, run.model.img_size, run.num_classes, recipe.batch_size,
                                seed=run.seed, rank=0, world_size=1, num_workers=run.runtime.num_workers)
        batches = min(batches, data.batches_per_epoch)
        loader = iter(data.loader(epoch=0))
        next(loader)  # warm-up (first batch includes worker start-up)
        start = time.perf_counter()
        for _ in range(batches):
            next(loader)
        return batches * recipe.batch_size / (time.perf_counter() - start), source


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model (after 3 warm-up steps)")
    parser.add_argument("--mjp-scale", choices=("tiny", "paper"), default="tiny",
                        help="model size for the MJP-vs-DeiT step ratio (paper: ViT-S/16, batch 8)")
    args = parser.parse_args()
    device = torch.device(args.device)
    params = load_params(args.params)
    tiny = supervised_run(apply_overrides(params, ["scale=tiny"]), "deit_s")
    paper = supervised_run(apply_overrides(params, ["scale=paper"]), "deit_s")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")

    rate = 1 / statistics.median(step_times(tiny, 64, device, args.steps * 5, warmup=3))
    print(f"tiny DeiT ({tiny.model.embed_dim}d x {tiny.model.depth}, {tiny.model.img_size}px), "
          f"batch 64: {rate:.2f} steps/s ({rate * 64:.0f} img/s)")
    rate = 1 / statistics.median(step_times(paper, 8, device, args.steps, warmup=3))
    print(f"ViT-S/16 (224px), batch 8: {rate:.3f} steps/s ({rate * 8:.1f} img/s)")

    # MJP vs DeiT-S at the same size: every MJP step shuffled (apply_prob 1), the worst case.
    scale = "paper" if args.mjp_scale == "paper" else "tiny"
    deit = supervised_run(apply_overrides(params, [f"scale={scale}"]), "deit_s")
    mjp = supervised_run(apply_overrides(params, [f"scale={scale}"]), "mjp")
    mjp = dataclasses.replace(mjp, jigsaw=dataclasses.replace(mjp.jigsaw, apply_prob=1.0))
    batch = 64 if scale == "tiny" else 8
    steps = args.steps * (5 if scale == "tiny" else 1)
    deit_times, mjp_times = [], []
    for _ in range(3):  # interleaved rounds, so drift in machine load hits both alike
        deit_times += step_times(deit, batch, device, steps, warmup=2)
        mjp_times += step_times(mjp, batch, device, steps, warmup=2)
    ratio = statistics.median(mjp_times) / statistics.median(deit_times)
    print(f"MJP vs DeiT-S step ({scale} model, batch {batch}, gamma {mjp.jigsaw.ratio}, DAL "
          f"{mjp.dal.head}): median {statistics.median(mjp_times) * 1e3:.1f} ms vs "
          f"{statistics.median(deit_times) * 1e3:.1f} ms, ratio {ratio:.3f}")
    images, source = loader_images_per_second(tiny, batches=10)
    print(f"tiny train loader (batch {tiny.recipe.batch_size}, {tiny.runtime.num_workers} workers, "
          f"{tiny.recipe.randaugment}): {images:.0f} img/s on {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
