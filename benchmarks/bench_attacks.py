"""Gradient-inversion cost: time of one optimisation-attack iteration (Inverting Gradients and GradViT
w/o image prior) with ``chunk`` independent reconstructions per objective (batch 1 each, the threat
model), for ViT-S/16 at 224 px (the paper scale) and the tiny-scale ViT; the operations dispatched and
the FLOPs per iteration (torch's dispatch counters); the cost-model constants they give
(vitpe.attacks.budget); what the paper budget costs per job; and the APRIL closed form's solve time.

    python benchmarks/bench_attacks.py [--device cpu|cuda] [--chunks 1 4 16] [--iterations N] [--threads T]

Each iteration is a forward, a gradient with a differentiable graph over every parameter and the
backward through it. Chunk 1 is the one-job autograd path; larger chunks the vmapped one.
"""
from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from vitpe.attacks import budget
from vitpe.attacks.april import april_closed_form
from vitpe.attacks.gradvit import GradViTSettings, gradvit_batch
from vitpe.attacks.inverting_gradients import IGSettings, inverting_gradients_batch
from vitpe.attacks.matching import InversionTask
from vitpe.attacks.threat import ThreatModel, box_bounds, client_update, prepare_model
from vitpe.config import load_params
from vitpe.models import build_vit

ROOT = Path(__file__).resolve().parents[1]


class OpCounter(TorchDispatchMode):
    """Counts the operations that reach the kernels (below autograd and vmap)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def make_tasks(model: torch.nn.Module, model_cfg: dict, chunk: int, device: torch.device) -> list[InversionTask]:
    size, patch = model_cfg["img_size"], model_cfg["patch_size"]
    tasks = []
    for i in range(chunk):
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(i)).to(device)
        y = torch.tensor([i % 1000], device=device)
        update = client_update(model, x, y, "plain", ThreatModel(), patch, seed=i)
        tasks.append(InversionTask(update.gradients, y, tuple(x.shape), seed=i))
    return tasks


def run_attack(attack: str, model, tasks, model_cfg: dict, device: torch.device, iterations: int) -> float:
    box = box_bounds(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, device)
    if attack == "inverting_gradients":
        inverting_gradients_batch(model, tasks, box, IGSettings(iterations=iterations))
    else:
        gradvit_batch(model, tasks, box, GradViTSettings(iterations=iterations), model_cfg["patch_size"])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def seconds_per_iteration(attack: str, model, tasks, model_cfg: dict, device: torch.device, iterations: int,
                          repeats: int) -> float:
    """The fastest of ``repeats`` runs of ``iterations`` (a shared machine only ever slows a run down)."""
    run_attack(attack, model, tasks, model_cfg, device, 1)  # warm-up (allocator, first-call paths)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        best = min(best, (run_attack(attack, model, tasks, model_cfg, device, iterations) - start) / iterations)
    return best


def linear_fit(points: dict[int, float]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of time over chunk."""
    xs, ys = list(points), list(points.values())
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def counts(model, tasks, model_cfg: dict, device: torch.device) -> tuple[int, float]:
    """(operations dispatched, FLOPs) of one Inverting Gradients iteration over ``tasks``."""
    with OpCounter() as ops, FlopCounterMode(display=False) as flops:
        run_attack("inverting_gradients", model, tasks, model_cfg, device, 1)
    return sum(ops.ops.values()), float(flops.get_total_flops())


def forward_flops(model, model_cfg: dict, device: torch.device) -> float:
    x = torch.randn(1, 3, model_cfg["img_size"], model_cfg["img_size"], device=device)
    with FlopCounterMode(display=False) as flops, torch.no_grad():
        model(x)
    return float(flops.get_total_flops())


def april_seconds(model_cfg: dict) -> float:
    torch.manual_seed(0)
    model = prepare_model(build_vit(model_cfg, 1000, "learnable", 0.0, first_block="april"))
    size = model_cfg["img_size"]
    update = client_update(model, torch.randn(1, 3, size, size), torch.tensor([1]), "plain", ThreatModel(),
                           model_cfg["patch_size"], seed=0)
    start = time.perf_counter()
    april_closed_form(model, update)
    return time.perf_counter() - start


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--chunks", type=int, nargs="+", default=[1, 4, 8, 16], help="images per objective (tiny)")
    parser.add_argument("--paper-chunks", type=int, nargs="+", default=[1, 2, 4],
                        help="images per objective for ViT-S/16 (CPU memory: about 1 GB per image)")
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per run")
    parser.add_argument("--repeats", type=int, default=2, help="runs per measurement (the fastest counts)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    kind = "cpu" if device.type == "cpu" else "gpu"
    params = load_params(ROOT / "params.yaml")
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, float32; "
          f"times are the fastest of {args.repeats} runs of {args.iterations} iterations")
    measured: dict[str, dict] = {}
    for scale, chunks in (("tiny", args.chunks), ("paper", args.paper_chunks)):
        cfg = params["scales"][scale]["model"]
        torch.manual_seed(0)
        model = prepare_model(build_vit(cfg, 1000, "learnable", 0.0)).to(device)
        name = f"ViT {cfg['img_size']}px/{cfg['patch_size']} d{cfg['embed_dim']} x{cfg['depth']}"
        fwd = forward_flops(model, cfg, device)
        print(f"\n{name}: forward {fwd / 1e9:.3f} GFLOP per image (analytic {budget.vit_forward_flops(cfg) / 1e9:.3f})")
        rows = {}
        for chunk in chunks:
            tasks = make_tasks(model, cfg, chunk, device)
            ops, flops = counts(model, tasks, cfg, device)
            times = {a: seconds_per_iteration(a, model, tasks, cfg, device, args.iterations, args.repeats)
                     for a in ("inverting_gradients", "gradvit")}
            rows[chunk] = dict(ops=ops, flops=flops, **times)
            print(f"  chunk {chunk:3d}: {ops:6d} ops, {flops / chunk / 1e9:7.2f} GFLOP per image "
                  f"({flops / chunk / fwd:.2f} forwards); IG {1000 * times['inverting_gradients']:9.1f} ms/it "
                  f"= {1000 * times['inverting_gradients'] / chunk:8.1f} ms/it/image; GradViT "
                  f"{1000 * times['gradvit']:9.1f} ms/it = {1000 * times['gradvit'] / chunk:8.1f} ms/it/image; "
                  f"peak RSS {peak_rss_mb():.0f} MB")
            del tasks
        print(f"  APRIL closed form: {april_seconds(cfg):.3f} s per image")
        measured[scale] = dict(cfg=cfg, fwd=fwd, rows=rows)
    constants(measured, kind)
    paper_budget(params)


def constants(measured: dict, kind: str) -> None:
    """The budget model's constants from the vmapped chunks (> 1): operations per objective iteration
    (fixed + per block, from the two depths), FLOPs per image in forwards, and for this device the
    time per operation (intercept of time over chunk / operations) and the FLOP rate (per-image slope)."""
    vmapped = {s: {c: r for c, r in m["rows"].items() if c > 1} for s, m in measured.items()}
    if not all(len(v) >= 2 for v in vmapped.values()):
        print("\n(cost-model constants need two chunks > 1 per model)")
        return
    tiny, paper = measured["tiny"], measured["paper"]
    common = max(set(vmapped["tiny"]) & set(vmapped["paper"]), default=None)
    if common is not None:
        per_block = (paper["rows"][common]["ops"] - tiny["rows"][common]["ops"]) / (paper["cfg"]["depth"]
                                                                                   - tiny["cfg"]["depth"])
        fixed = tiny["rows"][common]["ops"] - per_block * tiny["cfg"]["depth"]
        print(f"\nops per vmapped iteration (chunk {common}): OPS_FIXED ~ {fixed:.0f}, OPS_PER_BLOCK ~ {per_block:.0f}")
    for scale in ("tiny", "paper"):
        m, rows = measured[scale], vmapped[scale]
        ops = sum(r["ops"] for r in rows.values()) / len(rows)
        flops = max(rows.values(), key=lambda r: r["flops"])
        per_image = flops["flops"] / max(rows) / m["fwd"]
        for attack in ("inverting_gradients", "gradvit"):
            intercept, slope = linear_fit({c: r[attack] for c, r in rows.items()})
            rate = per_image * m["fwd"] / slope / 1e9 if slope > 0 else float("nan")
            print(f"  {scale:5s} {attack:20s}: {1e6 * intercept / ops:6.1f} us per operation, {rate:7.1f} GFLOP/s "
                  f"({per_image:.2f} forwards per image) on {kind}")
    for scale in ("tiny", "paper"):
        for chunk, row in measured[scale]["rows"].items():
            model_s = budget.iteration_seconds(measured[scale]["cfg"], chunk, budget.DEVICE_COSTS[kind])
            print(f"  {scale:5s} chunk {chunk:3d}: measured IG {1000 * row['inverting_gradients']:8.1f} ms/it, "
                  f"budget model ({kind}) {1000 * model_s:8.1f} ms/it")


def paper_budget(params: dict) -> None:
    """The paper budget with the configured jobs and chunk, per device kind of the budget model."""
    paper = {**params, "scale": "paper"}
    cfg = paper["attacks"]
    scale = paper["scales"]["paper"]["attacks"]
    print(f"\npaper budget per model: {scale['images']} images x {len(cfg['client'])} client modes x "
          f"({scale['iterations']['inverting_gradients']} IG + {scale['iterations']['gradvit']} GradViT) iterations, "
          f"jobs {scale.get('jobs', 1)}, chunk {scale.get('chunk', 1)}")
    for kind, exp in (("supervised", cfg["models"][0]), ("finetuned", cfg["finetuned"][0])):
        for dev in ("cpu", "gpu"):
            est = budget.attack_job_estimate(paper, exp, kind, dev)
            print(f"  {exp:10s} ({kind}) {dev} [{budget.DEVICE_COSTS[dev].basis}]: largest job {est.images} images, "
                  f"{est.iterations} objective iterations x {1000 * est.seconds_per_iteration:.0f} ms "
                  f"({est.chunk_images} images each, {est.ms_per_image_iteration:.1f} ms per image-iteration) "
                  f"-> {est.minutes} min ({est.minutes / 60:.1f} h) per job")


if __name__ == "__main__":
    main()
