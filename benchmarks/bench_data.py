"""Benchmark: time to generate the embedded datasets, and the training loader's throughput on them.

    PYTHONPATH=src python benchmarks/bench_data.py [--params params.yaml] [--epochs 2]

Generation uses the params file as is (default sizes) into a temporary folder; the loader is an
ImageFolder over imagenet/train with timm's training transform (RandAugment m5, random erasing 0.1)
at batch 64 and num_workers 0, i.e. the tiny-scale recipe's input pipeline on one process.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--epochs", type=int, default=2, help="passes over the training set to time")
    args = parser.parse_args()

    import torch
    from timm.data import create_transform
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    from vitpe.config import load_params
    from vitpe.data.synth import synthesize

    params = load_params(args.params)
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        root = synthesize(params, Path(tmp) / "embedded", log=lambda msg: None)
        generation = time.perf_counter() - start
        files = sum(1 for p in root.rglob("*") if p.is_file())
        print(f"generate: {generation:.1f} s for all embedded sets ({files} files, default sizes from {args.params})")

        transform = create_transform(input_size=32, is_training=True, auto_augment="rand-m5-mstd0.5-inc1", re_prob=0.1)
        dataset = ImageFolder(str(root / "imagenet" / "train"), transform=transform)
        loader = DataLoader(dataset, batch_size=64, shuffle=True, num_workers=0,
                            generator=torch.Generator().manual_seed(0))
        next(iter(loader))  # first-batch costs (imports, caches) are not throughput
        images = 0
        start = time.perf_counter()
        for _ in range(args.epochs):
            for batch, _ in loader:
                images += batch.shape[0]
        elapsed = time.perf_counter() - start
        print(f"loader: {images / elapsed:.0f} images/s ({images} images in {elapsed:.1f} s; ImageFolder + timm "
              f"RandAugment m5 + RE 0.1, batch 64, num_workers 0)")


if __name__ == "__main__":
    main()
