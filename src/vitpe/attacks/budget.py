"""The attack budget: which images each job of a model attacks, and how long a job runs.

A model's attack images are split into ``scales.<scale>.attacks.jobs`` contiguous parts (whole client
batches, seeds by global image index, so the merged result equals one job's). An optimisation attack
costs iterations x the time of one objective iteration, which serves ``chunk`` reconstructions at
once (matching.py) and is modelled as

    t(chunk) = ops x op_time + chunk x flops / flop_rate

``ops`` (operations dispatched per objective iteration, about the same for any chunk under vmap) and
``flops`` (work per image) are measured by benchmarks/bench_attacks.py; ``op_time`` and ``flop_rate``
describe the device (DEVICE_COSTS: measured on CPU, assumed for a GPU, see the README).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from vitpe.attacks.registry import attack_class
from vitpe.errors import ConfigError
from vitpe.models.spec import ViTSpec


def job_ranges(count: int, batch_size: int, jobs: int) -> list[range]:
    """Image indices of each job: ``jobs`` contiguous runs of whole client batches, sizes within one batch."""
    batches = math.ceil(count / batch_size)
    if jobs > batches:
        raise ConfigError(f"attack images: {count} in {batches} client batches of {batch_size}, fewer than the {jobs} "
                          "jobs planned from scales.<scale>.attacks.{images, jobs}")
    base, extra = divmod(batches, jobs)
    ranges, first = [], 0
    for job in range(jobs):
        stop = min(count, first + (base + (job < extra)) * batch_size)
        ranges.append(range(first, stop))
        first = stop
    return ranges


def jobs_for(kind: str, configured: int, images: int, batch_size: int) -> int:
    """Jobs per model of ``kind``: the configured split, at most one per client batch of the ``images``
    (so a scale with fewer images, e.g. smoke's 2, splits less); one for the closed forms (seconds per image)."""
    return 1 if kind == "april" else max(1, min(configured, math.ceil(images / batch_size)))


@dataclass(frozen=True)
class DeviceCost:
    op_us: float  # time per dispatched operation (host-side dispatch and launch), microseconds
    gflops: float  # sustained GFLOP/s on the attack's kernels
    basis: str  # where the two figures come from


# CPU: benchmarks/bench_attacks.py on this project's 2-core machine (one thread, float32, shared with other
# jobs: three runs spread 2x): 7-13 us per operation (tiny ViT, time over chunk extrapolated to chunk 0),
# 42-82 GFLOP/s (ViT-S/16, per-image slope); the slower ends are kept. GPU: assumptions, not
# measurements: the host time per operation is the one measured on this CPU (kernels launch
# asynchronously, so host dispatch bounds a small-kernel iteration), and 10 TFLOP/s on the matmuls,
# half an A100's FP32 peak, the rest left for the elementwise traffic (TF32 stays off: gradient matching
# wants FP32). Replace them with a GPU run of the benchmark (`--device cuda`).
DEVICE_COSTS = {
    "cpu": DeviceCost(op_us=13.0, gflops=45.0, basis="measured on a 2-core CPU"),
    "gpu": DeviceCost(op_us=13.0, gflops=10000.0, basis="assumed: 13 us per operation, 10 TFLOP/s"),
}

# Per vmapped objective iteration: OPS_FIXED + OPS_PER_BLOCK x depth operations (measured: 3113 for the
# 3-block tiny ViT, 10862 for 12-block ViT-S/16, nearly independent of the chunk; the one-job autograd
# path dispatches about 20 % fewer) and FLOPS_PER_FORWARD forwards' worth of FLOPs per image (7.17
# measured for ViT-S/16: forward, parameter gradient, and the backward through both).
OPS_FIXED = 530
OPS_PER_BLOCK = 861
FLOPS_PER_FORWARD = 7.2


def vit_forward_flops(model: ViTSpec | Mapping) -> float:
    """FLOPs (multiply-adds x 2) of one image through the ViT: patch embedding, then per block the qkv,
    projection and MLP matmuls and the two attention products over 1 + N tokens."""
    spec = ViTSpec.of(model)
    grid = spec.img_size // spec.patch_size
    tokens, dim = grid * grid + 1, spec.embed_dim
    hidden = int(dim * spec.mlp_ratio)
    patch = 2 * grid * grid * 3 * spec.patch_size ** 2 * dim
    block = 2 * tokens * dim * (3 * dim + dim + 2 * hidden) + 2 * 2 * tokens * tokens * dim
    return patch + spec.depth * block


def iteration_seconds(model: ViTSpec | Mapping, images: int, device: DeviceCost) -> float:
    """Modelled time of one objective iteration over ``images`` images (the vmapped operation count, an
    overestimate by about 20 % for the one-image autograd path)."""
    ops = OPS_FIXED + OPS_PER_BLOCK * ViTSpec.of(model).depth
    return ops * device.op_us * 1e-6 + images * FLOPS_PER_FORWARD * vit_forward_flops(model) / (device.gflops * 1e9)


def objective_iterations(images: int, batch_size: int, chunk: int, clients: int,
                         iterations: Mapping[str, int], restarts: int = 1) -> int:
    """Objective iterations of one job: per client mode, one run of each attack per chunk of batches."""
    objectives = math.ceil(math.ceil(images / batch_size) / chunk)
    per_objective = restarts * iterations.get("inverting_gradients", 0) + iterations.get("gradvit", 0)
    return clients * objectives * per_objective


OVERHEAD_MINUTES = 10  # start-up, the clean top-1 over the validation set, closed forms and metrics
MARGIN = 2.0  # on the modelled compute time: the GPU figures are assumptions, and a job killed at its
              # requested runtime starts over (the attacks keep no state between runs)


@dataclass(frozen=True)
class JobEstimate:
    images: int  # in the largest job
    iterations: int  # its objective iterations
    chunk_images: int  # images per objective
    seconds_per_iteration: float  # of one objective iteration
    minutes: int  # runtime to request: MARGIN x compute + OVERHEAD_MINUTES, rounded up

    @property
    def ms_per_image_iteration(self) -> float:
        return 1000 * self.seconds_per_iteration / self.chunk_images


def estimate_job(images: int, jobs: int, batch_size: int, chunk: int, clients: int, iterations: Mapping[str, int],
                 restarts: int, model: ViTSpec | Mapping, device: DeviceCost) -> JobEstimate:
    """The largest of ``jobs`` jobs over ``images`` images: its iterations and the runtime to request."""
    largest = max(len(r) for r in job_ranges(images, batch_size, jobs))
    chunk = min(chunk, math.ceil(largest / batch_size))  # a job never fills more than its batches
    its = objective_iterations(largest, batch_size, chunk, clients, iterations, restarts)
    seconds = iteration_seconds(model, chunk * batch_size, device)
    minutes = math.ceil(MARGIN * its * seconds / 60 + OVERHEAD_MINUTES)
    return JobEstimate(largest, its, chunk * batch_size, seconds, minutes)


def attack_job_estimate(params: dict, experiment: str, kind: str, device: str,
                        jobs: int | None = None) -> JobEstimate:
    """The estimate for one attacked model of the active scale (``kind`` as in ``vitpe attack run``)."""
    from vitpe.runs import stage_run

    cfg = params["attacks"]
    scale = params["scales"][params["scale"]]["attacks"]
    attacks = cfg["closed_form"] if kind == "april" else cfg["optimisation"]
    # closed forms cost seconds and are left out of the estimate
    iterations = {a: scale["iterations"][a] for a in attacks if attack_class(a).kind == "optimisation"}
    model = stage_run(params, "finetune" if kind == "finetuned" else "supervised", experiment).model
    batch = cfg["threat"]["batch_size"]
    jobs = jobs or jobs_for(kind, scale.get("jobs", 1), scale["images"], batch)
    return estimate_job(scale["images"], jobs, batch, scale.get("chunk", 1), len(cfg["client"]), iterations,
                        cfg["inverting_gradients"]["restarts"], model, DEVICE_COSTS[device])


def jobs_needed(params: dict, experiment: str, kind: str, device: str, limit_minutes: float) -> int | None:
    """The fewest jobs whose largest fits ``limit_minutes`` (None: not even one batch per job fits)."""
    scale = params["scales"][params["scale"]]["attacks"]
    batches = math.ceil(scale["images"] / params["attacks"]["threat"]["batch_size"])
    for jobs in range(1, batches + 1):
        if attack_job_estimate(params, experiment, kind, device, jobs).minutes <= limit_minutes:
            return jobs
    return None
