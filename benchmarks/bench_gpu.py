"""Paper-size training steps, the project's against official-style references: img/s, peak memory, MFU.

Each config runs the project's training step next to an official-style reference step
(benchmarks/reference_steps.py) of the same architecture, recipe values and batch size, in one run.

Configs (paper scale of params.yaml; ``--small`` shrinks every model to depth 2, 64 px, 8-px patches,
192 wide, MAE+ crops of 32 px, 10 classes: the whole script then runs in under a minute on 2 idle CPU cores):

    mae       ViT-B/16 MAE, 224 px, 75 % masking            vs models_mae.py + engine_pretrain.py
    mae_plus  MAE+ (absolute PE), 4 crops of 112 px / image  vs AdPE ad_ape.py --adv_type 0
    adpe      AdPE absolute PE, coordinate adversary         vs ad_ape.py --adv_type 2 with its adversarial AdamW
    deit_s    DeiT-S (ViT-S/16, 224 px)                      vs the MJP code's DeiT step (timm ViT)
    mjp       MJP (block shuffle on every step, unknown PE, DAL) vs the same DeiT-S reference step
    finetune  MAE fine-tuning of ViT-B/16 at 224 px, global pooling, layer decay vs main_finetune.py

The project side is the step training runs: the run built from params.yaml by vitpe.runs, set up by
the trainer (build_pretrain / build_supervised: model, optimizer, loss with Mixup / MJP / AdPE) and
run by the engine's StepRunner (autocast, backward, clipping or gradient norm, AdamW), compiled with
the engine's torch.compile options when ``--compile`` is given (the paper recipes set compile: true;
the reference stays eager, as the official code is). Batches are device-resident on both sides, so
data loading and the host-to-device copy are not measured. Times are medians over interleaved rounds
(bench_adpe.interleaved_rounds: both sides alternate, so drift in machine load hits both alike).

- t p/r: the median over rounds of each round's project/reference ratio of median step times; rounds:
  the lowest and highest round's ratio, the machine's noise (on a shared CPU, several hundredths);
- img/s: images per step / median step time (MAE+/AdPE: source images, each giving 4 crops);
- FLOP/step: torch.utils.flop_counter.FlopCounterMode over one eager step (forward + backward), with
  attention through the math SDPA kernel so its matmuls are counted on every device;
- MFU: FLOP/step × steps/s / the device's peak (``--peak-tflops``; defaults by device name: H100/H200
  989, A100 312 bf16 dense TFLOP/s; fp32: 67 / 19.5). Not reported on the CPU;
- peak GiB (CUDA): torch.cuda.max_memory_allocated over one step of that side alone, with its own
  weights, gradients, optimizer state and batch (the other side's resident memory subtracted).
  On the CPU the process's max RSS (both sides, all configs) is printed once instead.

    python benchmarks/bench_gpu.py [--device cpu|cuda] [--dtype bf16|fp32] [--steps N] [--rounds R]
        [--batch N | --batch NAME=N ...] [--compile] [--only NAME ...] [--small] [--peak-tflops T]
    python benchmarks/bench_gpu.py --device cpu --small --steps 2     # smoke check on the CPU
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from bench_adpe import _sync, interleaved_rounds, pooled_median  # the sibling benchmarks (the script's folder is on sys.path)
from bench_train import stand_in_image_folder
from reference_steps import (DecoderArch, MixupArgs, Step, ViTArch, build_deit_step, build_mae_finetune_step,
                             build_mae_plus_step, build_mae_step)
from vitpe.config import apply_overrides, load_params
from vitpe.runs import PretrainRun, SupervisedRun, encoder_run, num_classes, pretrain_run, supervised_run, with_recipe
from vitpe.train.distributed import DistEnv
from vitpe.train.engine import StepRunner
from vitpe.train.optim import scaled_lrs
from vitpe.train.pretrain import build_pretrain
from vitpe.train.supervised import build_supervised

ROOT = Path(__file__).resolve().parents[1]
GIB = 2 ** 30


@dataclass(frozen=True)
class Config:
    name: str
    batch: int  # images per step on CUDA: the per-GPU batch of the official commands
    reference: str  # what the reference side is


CONFIGS = (
    Config("mae", 64, "MAE models_mae.py"),  # PRETRAIN.md: 64 x 64 GPUs
    Config("mae_plus", 128, "AdPE ad_ape.py, no adversary"),  # AdPE README: 128 x 4 accum x 8
    Config("adpe", 128, "AdPE ad_ape.py coordinate, adv. AdamW"),
    Config("deit_s", 128, "MJP-code DeiT-S step"),  # MJP train.sh: 128 x 8 GPUs
    Config("mjp", 128, "MJP-code DeiT-S step (no MJP)"),
    Config("finetune", 128, "MAE main_finetune.py"),  # AdPE fine-tune README (APE): 128 x 8
)
NAMES = tuple(c.name for c in CONFIGS)
# every model at depth 2 and 64 px (8-px patches: an 8 x 8 grid, MAE+ crops 4 x 4), 192 wide
SMALL = ["scales.paper.model={img_size: 64, patch_size: 8, embed_dim: 192, depth: 2, num_heads: 3}",
         "scales.paper.pretrain.model={img_size: 64, patch_size: 8, embed_dim: 192, depth: 2, num_heads: 3}",
         "scales.paper.pretrain.decoder={embed_dim: 128, depth: 2, num_heads: 4}",
         "scales.paper.pretrain.mae_plus.crop_size=32", "data.real.num_classes=10"]
# dense peak TFLOP/s by device-name fragment (first match): bf16 tensor cores; fp32 without tensor
# cores (torch's default float32 matmul precision "highest" does not use TF32)
PEAK_TFLOPS = (("H100 PCIe", {"bf16": 756.0, "fp32": 51.0}), ("H100", {"bf16": 989.0, "fp32": 67.0}),
               ("H200", {"bf16": 989.0, "fp32": 67.0}), ("A100", {"bf16": 312.0, "fp32": 19.5}))


@dataclass(frozen=True)
class Options:
    device: torch.device
    amp: bool  # bf16 autocast (CUDA only, as the engine's StepRunner)
    compile: bool
    steps: int
    rounds: int
    warmup: int


@dataclass(frozen=True)
class Side:
    median_s: float
    flops: float  # per step
    peak_bytes: int | None  # CUDA only


@dataclass(frozen=True)
class Row:
    config: Config
    batch: int
    project: Side
    reference: Side
    round_ratios: tuple[float, ...]  # project / reference median step time of each interleaved round

    @property
    def ratio(self) -> float:
        return statistics.median(self.round_ratios)


# --- the runs --------------------------------------------------------------------------------------

def bench_params(path: str, small: bool) -> dict:
    return apply_overrides(load_params(path), ["scale=paper", *(SMALL if small else [])])


def project_run(params: dict, name: str) -> PretrainRun | SupervisedRun:
    if name == "mae":
        return pretrain_run(params, "mae")
    if name == "mae_plus":
        return pretrain_run(params, "mae_plus_abs")
    if name == "adpe":
        return pretrain_run(params, "adpe_abs_coordinate")
    if name == "finetune":
        return encoder_run(params, "mae", "finetune")  # no pretrained weights: the cost is the same
    run = supervised_run(params, name)
    if name == "mjp":  # every step shuffled (apply_prob 1), as bench_train: a stable median, the worst case
        run = dataclasses.replace(run, jigsaw=dataclasses.replace(run.jigsaw, apply_prob=1.0))
    return run


def step_run(run: PretrainRun | SupervisedRun, batch: int, train_dir: Path) -> PretrainRun | SupervisedRun:
    """``run`` at ``batch`` images per step on one process: no accumulation, no memory plan, no
    activation checkpointing, eager (this script compiles itself, after counting FLOPs)."""
    run = with_recipe(run, batch_size=batch, accum_steps=1, num_workers=0, gpu_memory_gb=None,
                      grad_checkpointing=False, compile=False)
    return dataclasses.replace(run, train_dir=train_dir)


# --- the two sides ---------------------------------------------------------------------------------

def project_side(run: PretrainRun | SupervisedRun, batch: int, opts: Options, train_dir: Path
                 ) -> tuple[StepRunner, Callable[[], object]]:
    """The trainer's model, optimizer and loss, stepped by the engine's StepRunner on a fixed batch."""
    env = DistEnv(rank=0, world_size=1, local_rank=0, device=opts.device)
    run = step_run(run, batch, train_dir)
    setup = build_pretrain(run, env) if isinstance(run, PretrainRun) else build_supervised(run, env)
    runner = StepRunner(setup.forward_module, setup.optimizer, setup.loss_fn, accum_steps=1,
                        clip_grad=run.recipe.clip_grad, amp="bf16" if opts.amp else "none", env=env)
    gen = torch.Generator().manual_seed(0)
    if isinstance(run, PretrainRun):
        size, epoch = run.crops.crop_size, 0
        data = [torch.randn(batch, run.crops.num_crops, 3, size, size, generator=gen)]
    else:  # past the LR warm-up: MJP's shuffle is live
        size, epoch = run.model.img_size, run.recipe.warmup_epochs
        data = [torch.randn(batch, 3, size, size, generator=gen),
                torch.randint(0, run.num_classes, (batch,), generator=gen)]
    data = [t.to(opts.device) for t in data]
    return runner, lambda: runner([data], epoch)


def reference_side(run: PretrainRun | SupervisedRun, batch: int, opts: Options) -> Step:
    """The official-style step of the same architecture, recipe values and batch size."""
    device, amp = opts.device, torch.bfloat16 if opts.amp else None
    gen = torch.Generator().manual_seed(1)
    arch, recipe = ViTArch(**asdict(run.model)), run.recipe
    lr = scaled_lrs(dataclasses.replace(recipe, batch_size=batch))[0]
    if isinstance(run, PretrainRun):
        size, crops = run.crops.crop_size, run.crops.num_crops
        images = torch.randn(batch * crops, 3, size, size, generator=gen).to(device)
        decoder = DecoderArch(**asdict(run.decoder))
        common = dict(mask_ratio=recipe.mask_ratio, lr=lr, weight_decay=recipe.weight_decay, amp_dtype=amp)
        if run.method == "mae":
            return build_mae_step(images, arch, decoder, **common)
        adv = run.adversary
        if adv is None:
            return build_mae_plus_step(images, arch, decoder, **common)
        adv_lr = recipe.adv_lr * batch / recipe.lr_batch_divisor
        return build_mae_plus_step(images, arch, decoder, adversary=adv.mode, adv_lr=adv_lr, norm=adv.norm,
                                   adv_eps=adv.eps, **common)
    images = torch.randn(batch, 3, arch.img_size, arch.img_size, generator=gen).to(device)
    targets = torch.randint(0, run.num_classes, (batch,), generator=gen).to(device)
    mixup = MixupArgs(recipe.mixup, recipe.cutmix, recipe.mixup_prob, recipe.mixup_switch_prob, recipe.smoothing)
    if run.protocol == "finetune":
        return build_mae_finetune_step(images, targets, arch, run.num_classes, lr=lr, weight_decay=recipe.weight_decay,
                                       layer_decay=recipe.layer_decay, drop_path=recipe.drop_path, mixup=mixup,
                                       amp_dtype=amp)
    return build_deit_step(images, targets, arch, run.num_classes, lr=lr, weight_decay=recipe.weight_decay,
                           clip_grad=recipe.clip_grad, mixup=mixup, amp_dtype=amp)


# --- measurements ----------------------------------------------------------------------------------

def count_flops(step: Callable[[], object]) -> float:
    """FLOPs of one step (forward + backward; the optimizer's elementwise work is not counted). The
    math SDPA kernel, because the CPU's fused attention kernel has no FLOP formula."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def allocated(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def peak_bytes(step: Callable[[], object], resident: int, device: torch.device) -> int | None:
    """Peak of one step of this side alone: its resident state plus what the step adds on top of
    everything allocated before it (which includes the other side's state)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    torch.cuda.synchronize(device)
    return resident + torch.cuda.max_memory_allocated(device) - before


def timed(step: Callable[[], object], device: torch.device) -> Callable[[], float]:
    def timer() -> float:
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        return time.perf_counter() - start

    return timer


def release(device: torch.device, compiled: bool) -> None:
    """Free one config's models before the next (and dynamo's caches of its compiled module)."""
    if compiled:
        torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure(config: Config, params: dict, batch: int, opts: Options, train_dir: Path) -> Row:
    run = project_run(params, config.name)
    base = allocated(opts.device)
    runner, project = project_side(run, batch, opts, train_dir)
    project_flops = count_flops(project)  # eager: FlopCounterMode does not see inside compiled graphs
    project_resident = allocated(opts.device) - base
    if opts.compile:  # as the engine compiles the module it trains
        runner.model = torch.compile(runner.model, options={"fallback_random": True})
    base = allocated(opts.device)
    reference = reference_side(run, batch, opts)
    reference_flops = count_flops(reference)
    reference_resident = allocated(opts.device) - base

    rounds = interleaved_rounds({"project": timed(project, opts.device), "reference": timed(reference, opts.device)},
                                opts.steps, opts.rounds, opts.warmup)
    medians = {side: pooled_median(times) for side, times in rounds.items()}
    ratios = tuple(statistics.median(p) / statistics.median(r) for p, r in zip(rounds["project"], rounds["reference"]))
    row = Row(config, batch,
              Side(medians["project"], project_flops, peak_bytes(project, project_resident, opts.device)),
              Side(medians["reference"], reference_flops, peak_bytes(reference, reference_resident, opts.device)),
              ratios)
    del runner, project, reference
    release(opts.device, opts.compile)
    return row


# --- report ----------------------------------------------------------------------------------------

def peak_tflops(device: torch.device, dtype: str, given: float | None) -> float | None:
    if device.type != "cuda":
        return None
    if given is not None:
        return given
    name = torch.cuda.get_device_name(device)
    return next((table[dtype] for fragment, table in PEAK_TFLOPS if fragment in name), None)


HEADER = (f"{'config':<9} {'batch':>5} {'proj ms':>9} {'ref ms':>9} {'t p/r':>6} {'rounds':>11} {'proj img/s':>10} "
          f"{'ref img/s':>10} {'img/s p/r':>9} {'proj GFLOP':>10} {'ref GFLOP':>10} {'proj MFU':>8} "
          f"{'ref MFU':>8} {'proj GiB':>8} {'ref GiB':>8}  reference")


def _mfu(side: Side, peak: float | None) -> str:
    return "n/a" if peak is None else f"{side.flops / side.median_s / (peak * 1e12):.1%}"


def _gib(side: Side) -> str:
    return "n/a" if side.peak_bytes is None else f"{side.peak_bytes / GIB:.2f}"


def format_row(row: Row, peak: float | None) -> str:
    p, r = row.project, row.reference
    return (f"{row.config.name:<9} {row.batch:>5} {p.median_s * 1e3:>9.1f} {r.median_s * 1e3:>9.1f} "
            f"{row.ratio:>6.3f} {min(row.round_ratios):>5.3f}-{max(row.round_ratios):<5.3f} "
            f"{row.batch / p.median_s:>10.1f} {row.batch / r.median_s:>10.1f} "
            f"{r.median_s / p.median_s:>9.3f} {p.flops / 1e9:>10.1f} {r.flops / 1e9:>10.1f} {_mfu(p, peak):>8} "
            f"{_mfu(r, peak):>8} {_gib(p):>8} {_gib(r):>8}  {row.config.reference}")


def describe(opts: Options, dtype: str, peak: float | None, small: bool) -> str:
    device = opts.device
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)}, " + (f"peak {peak:g} TFLOP/s {dtype}" if peak else
                                                            "peak unknown for this device: pass --peak-tflops")
    elif torch.cuda.is_available():
        where = "CPU (requested): MFU not reported"
    else:
        where = "no CUDA device: CPU figures, MFU not reported"
    precision = ("bf16 autocast" if opts.amp else "fp32") if device.type == "cuda" else "fp32 (autocast is CUDA-only)"
    return (f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {device.type}: {where}\n"
            f"{precision}, project {'compiled' if opts.compile else 'eager'}, reference eager; "
            f"{'small models (--small)' if small else 'paper sizes'}; median of {opts.rounds} rounds x "
            f"{opts.steps} steps after {opts.warmup} warm-up steps per round")


# --- command line ----------------------------------------------------------------------------------

def batch_sizes(values: list[str] | None, device: torch.device, small: bool) -> dict[str, int]:
    """Per config: ``--batch N`` for all, ``--batch NAME=N`` for one; else the paper's per-GPU batch on
    CUDA (8 with --small) and 8 (small) / 2 on the CPU."""
    default = {c.name: (8 if small else c.batch) if device.type == "cuda" else (8 if small else 2) for c in CONFIGS}
    for value in values or []:
        name, sep, number = value.rpartition("=")
        if sep and name not in NAMES:
            raise SystemExit(f"--batch {value}: unknown config {name!r} (known: {', '.join(NAMES)})")
        if not number.isdigit() or int(number) < 1:
            raise SystemExit(f"--batch {value}: expected N or NAME=N with N a positive integer")
        for key in ([name] if sep else NAMES):
            default[key] = int(number)
    return default


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16", help="bf16: autocast on CUDA")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per side and round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per side and round")
    parser.add_argument("--batch", action="append", metavar="N|NAME=N", help="images per step (repeatable)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the project's module (engine options)")
    parser.add_argument("--only", nargs="+", choices=NAMES, help="configs to run (default: all)")
    parser.add_argument("--small", action="store_true", help="shrink every model: a CPU smoke check")
    parser.add_argument("--peak-tflops", type=float, help="peak dense TFLOP/s of the device for --dtype")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")
    return args


def main() -> int:
    args = parse_args()
    device = torch.device(args.device)
    opts = Options(device, amp=args.dtype == "bf16" and device.type == "cuda", compile=args.compile,
                   steps=args.steps, rounds=args.rounds, warmup=args.warmup)
    params = bench_params(args.params, args.small)
    batches = batch_sizes(args.batch, device, args.small)
    peak = peak_tflops(device, args.dtype, args.peak_tflops)
    print(describe(opts, args.dtype, peak, args.small))
    print(HEADER, flush=True)
    configs = [c for c in CONFIGS if args.only is None or c.name in args.only]
    with tempfile.TemporaryDirectory() as tmp:
        # the trainers need an image folder to set up their loaders (never read here): tiny images,
        # enough of them for one batch after timm's repeated-augmentation sampler rounds to 256
        classes = num_classes(params)
        per_class = -(-(max(256, max(batches.values())) + 256) // classes)
        train_dir = stand_in_image_folder(Path(tmp), classes, per_class, size=8)
        for config in configs:
            row = measure(config, params, batches[config.name], opts, train_dir)
            print(format_row(row, peak), flush=True)
    if device.type == "cpu":
        print(f"process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f} GiB "
              "(both sides, all configs; per-side peak memory is CUDA-only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
