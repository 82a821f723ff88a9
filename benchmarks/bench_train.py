"""Training throughput: optimizer steps/s of the tiny DeiT (batch 64) and of ViT-S/16 (batch 8, 224 px),
timed after warm-up on synthetic batches through the real step (Mixup, loss, backward, clip, AdamW),
and images/s of the tiny-scale train loader (RandAugment, random erasing) on the embedded ImageFolder
(or a generated stand-in if `vitpe data` has not run yet).

    python benchmarks/bench_train.py [--device cpu|cuda] [--steps N]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vitpe.config import SupervisedRun, apply_overrides, load_params, supervised_run
from vitpe.models import build_vit
from vitpe.train.data import build_criterion, build_mixup, build_train_data
from vitpe.train.distributed import DistEnv
from vitpe.train.engine import StepRunner
from vitpe.train.optim import build_optimizer, scaled_lrs

ROOT = Path(__file__).resolve().parents[1]


def steps_per_second(run: SupervisedRun, batch: int, device: torch.device, steps: int, warmup: int) -> float:
    recipe = run.recipe
    model = build_vit(run.model, run.num_classes, run.pos_embed, recipe["drop_path"]).to(device)
    optimizer = build_optimizer(model, scaled_lrs(recipe)[0], recipe["weight_decay"])
    mixup = build_mixup(recipe, run.num_classes)
    criterion = build_criterion(recipe, mixup)

    def loss_fn(net, data):
        images, targets = mixup(*data) if mixup is not None else data
        return criterion(net(images), targets)

    env = DistEnv(rank=0, world_size=1, local_rank=0, device=device)
    runner = StepRunner(model, optimizer, loss_fn, accum_steps=1, clip_grad=recipe["clip_grad"],
                        amp=recipe["amp"], env=env)
    size = run.model["img_size"]
    batches = [[torch.randn(batch, 3, size, size), torch.randint(0, run.num_classes, (batch,))]
               for _ in range(2)]
    for i in range(warmup):
        runner([batches[i % 2]])
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(steps):
        runner([batches[i % 2]])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


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
            root = stand_in_image_folder(Path(tmp), run.num_classes, 100, run.model["img_size"])
            source = "generated stand-in (embedded dataset not found)"
        data = build_train_data(root, recipe, run.model["img_size"], run.num_classes, recipe["batch_size"],
                                seed=run.seed, rank=0, world_size=1)
        batches = min(batches, data.batches_per_epoch)
        loader = iter(data.loader(epoch=0))
        next(loader)  # warm-up (first batch includes worker start-up)
        start = time.perf_counter()
        for _ in range(batches):
            next(loader)
        return batches * recipe["batch_size"] / (time.perf_counter() - start), source


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model (after 3 warm-up steps)")
    args = parser.parse_args()
    device = torch.device(args.device)
    params = load_params(args.params)
    tiny = supervised_run(apply_overrides(params, ["scale=tiny"]), "deit_s")
    paper = supervised_run(apply_overrides(params, ["scale=paper"]), "deit_s")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")

    rate = steps_per_second(tiny, 64, device, args.steps * 5, warmup=3)
    print(f"tiny DeiT ({tiny.model['embed_dim']}d x {tiny.model['depth']}, {tiny.model['img_size']}px), "
          f"batch 64: {rate:.2f} steps/s ({rate * 64:.0f} img/s)")
    rate = steps_per_second(paper, 8, device, args.steps, warmup=3)
    print(f"ViT-S/16 (224px), batch 8: {rate:.3f} steps/s ({rate * 8:.1f} img/s)")
    images, source = loader_images_per_second(tiny, batches=10)
    print(f"tiny train loader (batch {tiny.recipe['batch_size']}, {tiny.recipe['num_workers']} workers, "
          f"{tiny.recipe['randaugment']}): {images:.0f} img/s on {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
