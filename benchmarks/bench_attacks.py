"""Gradient-inversion cost: optimisation-attack iterations/s (Inverting Gradients and GradViT w/o image
prior) for ViT-S/16 at 224 px, batch 1 (the paper-scale threat model), and for the tiny-scale ViT; plus
the APRIL closed form's solve time. Each iteration is a forward, a gradient with a differentiable graph
over every parameter, and the backward through it. Prints the per-iteration time, iterations/s and
what the configured budget (24k / 120k iterations per image) costs per image.

    python benchmarks/bench_attacks.py [--device cpu|cuda] [--iterations N] [--threads T]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from vitpe.attacks.april import april_closed_form
from vitpe.attacks.gradvit import GradViTSettings, gradvit
from vitpe.attacks.inverting_gradients import IGSettings, inverting_gradients
from vitpe.attacks.threat import ThreatModel, box_bounds, client_update, prepare_model
from vitpe.config import load_params
from vitpe.models import build_vit

ROOT = Path(__file__).resolve().parents[1]


def per_iteration(attack: str, model_cfg: dict, device: torch.device, iterations: int, warmup: int = 2) -> float:
    """Seconds per attack iteration (median-free: the mean over ``iterations`` after ``warmup``)."""
    torch.manual_seed(0)
    model = prepare_model(build_vit(model_cfg, 1000, "learnable", 0.0)).to(device)
    size = model_cfg["img_size"]
    x = torch.randn(1, 3, size, size, device=device)
    y = torch.tensor([1], device=device)
    update = client_update(model, x, y, "plain", ThreatModel(), model_cfg["patch_size"], seed=0)
    box = box_bounds(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, device)

    def run(n: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        if attack == "inverting_gradients":
            inverting_gradients(model, update.gradients, y, x.shape, box, IGSettings(iterations=n), 0)
        else:
            gradvit(model, update.gradients, y, x.shape, box, GradViTSettings(iterations=n), 0, model_cfg["patch_size"])
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    run(warmup)
    return run(iterations) / iterations


def april_seconds(model_cfg: dict) -> float:
    torch.manual_seed(0)
    model = prepare_model(build_vit(model_cfg, 1000, "learnable", 0.0, first_block="april"))
    size = model_cfg["img_size"]
    update = client_update(model, torch.randn(1, 3, size, size), torch.tensor([1]), "plain", ThreatModel(),
                           model_cfg["patch_size"], seed=0)
    start = time.perf_counter()
    april_closed_form(model, update)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations per attack (ViT-S/16)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    params = load_params(ROOT / "params.yaml")
    budgets = {s: params["scales"][s]["attacks"]["iterations"] for s in ("tiny", "paper")}
    print(f"device {device}, torch threads {torch.get_num_threads()}")
    for scale, iters in (("tiny", 50), ("paper", args.iterations)):
        cfg = params["scales"][scale]["model"]
        name = f"ViT {cfg['img_size']}px/{cfg['patch_size']} d{cfg['embed_dim']} x{cfg['depth']}"
        for attack in ("inverting_gradients", "gradvit"):
            sec = per_iteration(attack, cfg, device, iters)
            budget = budgets[scale][attack]
            print(f"{scale:5s} {name:24s} {attack:20s} batch 1: {1 / sec:8.2f} it/s ({1000 * sec:8.1f} ms/it); "
                  f"{budget} iterations = {budget * sec / 60:8.1f} min per image and client mode")
        print(f"{scale:5s} {name:24s} APRIL closed form: {april_seconds(cfg):.3f} s per image")


if __name__ == "__main__":
    main()
