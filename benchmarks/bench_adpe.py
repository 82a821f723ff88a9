"""AdPE cost: an AdPE pretraining step against the MAE+ step it extends, and MAE's visible-only encoder
against a full-sequence forward of the same encoder (ratios of medians, interleaved rounds, one run).

Each AdPE variant is compared with MAE+ of the same PE (absolute; discrete iRPE for the embedding
adversary; the interpolated iRPE without δ for the coordinate adversary), on the same synthetic crops
through the real step (forward, masked-patch loss, backward, AdamW with the ascending δ group and
the projection).

    python benchmarks/bench_adpe.py [--scale tiny|paper] [--device cpu|cuda] [--steps N] [--batch B]
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

from vitpe.config import apply_overrides, load_params

from vitpe.runs import PretrainRun, pretrain_run
from vitpe.train.pretrain import build_autoencoder, build_pretrain_optimizer

ROOT = Path(__file__).resolve().parents[1]
# (AdPE variant, the MAE+ it extends: same experiment without the adversary)
PAIRS = (("adpe_abs_embedding", "mae_plus_abs"), ("adpe_abs_coordinate", "mae_plus_abs"),
         ("adpe_rel_embedding", "mae_plus_rel"), ("adpe_rel_coordinate", "adpe_rel_coordinate:clean"))


def _run(params: dict, name: str) -> PretrainRun:
    exp, _, variant = name.partition(":")
    run = pretrain_run(params, exp)
    if variant == "clean":  # the same interpolated iRPE without its δ
        run = dataclasses.replace(run, adversary=None, rpe_config=dataclasses.replace(run.rpe_config, adversary=None))
    return run


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_timer(run: PretrainRun, batch: int, device: torch.device):
    torch.manual_seed(0)
    model = build_autoencoder(run).to(device)
    optimizer = build_pretrain_optimizer(model, run, lr=1e-4)
    size = run.crops.crop_size
    images = torch.randn(batch * run.crops.num_crops, 3, size, size, device=device)

    def step() -> float:
        _sync(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        model(images)[0].backward()
        optimizer.step()
        _sync(device)
        return time.perf_counter() - start

    return step


def forward_timer(encoder: torch.nn.Module, images: torch.Tensor, visible: bool, mae, device: torch.device):
    @torch.no_grad()
    def forward() -> float:
        _sync(device)
        start = time.perf_counter()
        if visible:
            mae.encode_visible(images)
        else:
            encoder.forward_features(images)
        _sync(device)
        return time.perf_counter() - start

    return forward


def interleaved_rounds(timers: dict, steps: int, rounds: int = 3, warmup: int = 2) -> dict[str, list[list[float]]]:
    """Per timer, the ``steps`` timed calls of each round (after ``warmup`` untimed ones). The timers
    alternate round by round, so drift in machine load hits every variant alike."""
    times: dict[str, list[list[float]]] = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            calls = [timer() for _ in range(warmup + steps)]
            times[name].append(calls[warmup:])
    return times


def pooled_median(per_round: list[list[float]]) -> float:
    """The median of all the timed calls of every round."""
    return statistics.median(t for round_ in per_round for t in round_)


def interleaved_medians(timers: dict, steps: int, rounds: int = 3, warmup: int = 2) -> dict[str, float]:
    """Per timer, the median of all its timed calls over the interleaved rounds."""
    return {name: pooled_median(times) for name, times in interleaved_rounds(timers, steps, rounds, warmup).items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--scale", choices=("tiny", "paper"), default="tiny")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant and round")
    parser.add_argument("--batch", type=int, default=None, help="images per step (default: 64 tiny, 2 paper)")
    args = parser.parse_args()
    device = torch.device(args.device)
    params = apply_overrides(load_params(args.params), [f"scale={args.scale}"])
    batch = args.batch or (64 if args.scale == "tiny" else 2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, {args.scale} scale, "
          f"batch {batch} images")

    names = sorted({n for pair in PAIRS for n in pair})
    medians = interleaved_medians({n: step_timer(_run(params, n), batch, device) for n in names}, args.steps)
    for adpe, base in PAIRS:
        print(f"AdPE step {adpe} vs {base.replace(':clean', ' without delta')}: median "
              f"{medians[adpe] * 1e3:.1f} ms vs {medians[base] * 1e3:.1f} ms, ratio {medians[adpe] / medians[base]:.3f}")

    mae = build_autoencoder(pretrain_run(params, "mae")).to(device).eval()
    size = mae.encoder.grid_size * mae.patch_size
    images = torch.randn(batch, 3, size, size, device=device)
    fwd = interleaved_medians({"visible": forward_timer(mae.encoder, images, True, mae, device),
                               "full": forward_timer(mae.encoder, images, False, mae, device)}, args.steps * 2)
    print(f"MAE encoder forward at mask ratio {mae.mask_ratio} vs the full sequence ({size}px, "
          f"{mae.num_patches} patches): median {fwd['visible'] * 1e3:.2f} ms vs {fwd['full'] * 1e3:.2f} ms, "
          f"ratio {fwd['visible'] / fwd['full']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
