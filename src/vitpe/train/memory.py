"""Per-GPU micro-batch, gradient accumulation and activation checkpointing from the GPU memory.

A recipe states the global batch (the lr scales with it) and, at the GPU scales, ``gpu_memory_gb``
(the card's memory, GiB) and ``grad_checkpointing`` (true | false | auto). The plan splits the
global batch G as micro-batch x accum_steps x processes, EXACTLY (never rounded), taking the
fewest accumulation steps (at least the recipe's ``accum_steps``; ``auto`` = 1) whose estimated peak
fits ``USABLE_FRACTION`` of the card. ``grad_checkpointing: auto`` turns checkpointing on only when no
micro-batch of ``MIN_MICRO_BATCH`` images fits without it, and then uses the smallest micro-batch
>= that minimum, so a bigger card never gets a smaller micro-batch. Without ``gpu_memory_gb`` (the
tiny scale) the recipe's ``accum_steps`` is used as given (and ``auto`` checkpointing stays off).
The plan depends on the configuration only, never on the device it runs on: every rank, and a
resumed run, computes the same one.

The estimate, in bytes per GPU (``a`` = 2 under bf16/fp16 autocast, 4 in fp32):

    peak = static + micro x per_image
    static = 4 P (fp32 weights) + 4 T (grads) + 4 k T (optimizer: AdamW k = 2, LARS k = 1)
             + 4 T (DDP's gradient buckets, > 1 process) + 2 P (autocast's bf16 weight copies)
    per_image = views x (sum over towers of depth x block + other + block_max)        plain
              = views x (sum over towers of depth x 4 N D + other + 2 x block_max)   checkpointed
    block = N x (8 D + 16 + a (6 D + 2 H_mlp) + 4 h)   [+ N x a (h (50 + N) + D) with iRPE]

with P / T parameters / trainable parameters, N tokens, D width, H_mlp = mlp_ratio x D, h heads.
``block`` is what one pre-norm block keeps for its backward, per sample: the two LayerNorm inputs
(fp32 residual stream, 8 D) and their mean/rstd (16), the qkv input and output (4 a D), the fused
attention output (a D; flash and memory-efficient kernels keep no N x N matrix, only a 4 h
logsumexp), the fc1 input (a D), the GELU input and the fc2 input (2 a H_mlp). iRPE adds the
bucket lookup (a h 50), the bias the memory-efficient kernel keeps (a h N) and the scaled query
(a D). ``other`` is the rest of one view: the input image (4 x 3 S^2, plus its a x 3 S^2 autocast
copy), the final norm and head (classifier) or the decoder embedding, norm, prediction, MAE's
gathers and the fp32 pixel loss (autoencoders), and the loss on the logits. ``block_max`` is the
backward's working set (the gradients of one block); with checkpointing each block keeps only its
fp32 input (4 N D) and the backward recomputes one block at a time (2 x block_max). A frozen
encoder (linear probing) keeps nothing: one block's forward working set per image.

Counting what autograd saves (``saved_tensor_bytes``) on CPU, where the fused attention kernel
keeps the same tensors as CUDA's, reproduces ``block`` and ``other`` to 32 bytes per image, with
and without checkpointing (tests/test_memory_plan.py); with iRPE the CPU falls back to unfused
attention and keeps up to a third more. The working set, the CUDA context and allocator fragmentation are what
``USABLE_FRACTION`` leaves room for.

``python -m vitpe.train.memory`` prints the plans of the paper stages on 8 x 40 GB and 8 x 80 GB.
"""
from __future__ import annotations

import argparse
import sys
import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from vitpe.errors import ConfigError, VitpeError
from vitpe.mae.settings import DecoderConfig
from vitpe.models.spec import RPEConfig, ViTSpec
from vitpe.runs import (ClassifierRecipe, PretrainRecipe, PretrainRun, Runtime, SupervisedRun, encoder_run,
                        pretrain_run, supervised_run)
from vitpe.train.progress import print_stamped

GIB = 2**30
USABLE_FRACTION = 0.85  # of gpu_memory_gb: CUDA context, NCCL buffers, fragmentation, the estimate's error
MIN_MICRO_BATCH = 32  # images per micro-batch that keep a ViT-B/S GPU busy (grad_checkpointing: auto)
ACT_BYTES = {"none": 4, "bf16": 2, "fp16": 2}
OPTIMIZER_SLOTS = {"adamw": 2, "lars": 1}  # fp32 state tensors per trainable parameter
RPE_BUCKETS = 50  # iRPE's 49 product buckets + the CLS bucket (vitpe.models.irpe.NUM_BUCKETS)


# --- the estimate -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tower:
    """A stack of pre-norm transformer blocks as one view passes it."""

    depth: int
    tokens: int
    dim: int
    heads: int
    mlp_ratio: float
    rpe: bool = False  # iRPE in every block
    rpe_scaled_query: bool = True  # the RPE term takes q x scale (a copy of q)

    def block_bytes(self, act: int) -> int:
        """What one block keeps for its backward, per sample (module docstring)."""
        n, d, h = self.tokens, self.dim, self.heads
        per_token = 8 * d + 16 + act * (6 * d + 2 * int(d * self.mlp_ratio)) + 4 * h
        if self.rpe:
            per_token += act * h * (RPE_BUCKETS + n) + (act * d if self.rpe_scaled_query else 0)
        return n * per_token

    def input_bytes(self) -> int:
        """What a checkpointed block keeps: its fp32 input."""
        return 4 * self.tokens * self.dim


@dataclass(frozen=True)
class Workload:
    """What training one image costs: the towers each of its views passes, plus the fixed state."""

    towers: tuple[Tower, ...]
    views: int  # crops per image (MAE+: 4)
    other_bytes: int  # per view, outside the towers: input, head or decoder ends, loss
    parameters: int
    trainable: int
    optimizer: str  # adamw | lars
    amp: str  # none | bf16 | fp16
    frozen: bool = False  # the towers take no gradient (linear probing)

    @property
    def act_bytes(self) -> int:
        return ACT_BYTES[self.amp]


@dataclass(frozen=True)
class MemoryEstimate:
    static_bytes: int
    image_bytes: int  # per image, plain
    image_bytes_checkpointed: int  # per image, with activation checkpointing

    def peak(self, micro_batch: int, checkpointed: bool) -> int:
        per_image = self.image_bytes_checkpointed if checkpointed else self.image_bytes
        return self.static_bytes + micro_batch * per_image


def stored_bytes(workload: Workload, checkpointed: bool = False) -> int:
    """Bytes per image autograd keeps from the forward to the backward (no working set)."""
    act = workload.act_bytes
    if workload.frozen:
        towers = 0
    elif checkpointed:
        towers = sum(t.depth * t.input_bytes() for t in workload.towers)
    else:
        towers = sum(t.depth * t.block_bytes(act) for t in workload.towers)
    return workload.views * (towers + workload.other_bytes)


def estimate_memory(workload: Workload, world_size: int) -> MemoryEstimate:
    """The estimate of the module docstring for ``workload`` on ``world_size`` processes."""
    p, t = workload.parameters, workload.trainable
    static = 4 * p + 4 * t + 4 * OPTIMIZER_SLOTS[workload.optimizer] * t
    static += 4 * t if world_size > 1 else 0
    static += 2 * p if workload.act_bytes < 4 else 0
    block_max = max(tower.block_bytes(workload.act_bytes) for tower in workload.towers)
    if workload.frozen:  # nothing kept: one block's forward intermediates at a time
        image = workload.views * block_max + stored_bytes(workload)
        return MemoryEstimate(static, image, image)
    plain = stored_bytes(workload) + workload.views * block_max
    checkpointed = stored_bytes(workload, checkpointed=True) + workload.views * 2 * block_max
    return MemoryEstimate(static, plain, checkpointed)


def vit_tower(model: ViTSpec | DecoderConfig, tokens: int, rpe: RPEConfig | None = None) -> Tower:
    """The tower of a ViT (or MAE decoder) at ``tokens`` tokens, with ``rpe`` in every block."""
    return Tower(depth=model.depth, tokens=tokens, dim=model.embed_dim, heads=model.num_heads,
                 mlp_ratio=model.mlp_ratio, rpe=rpe is not None,
                 rpe_scaled_query=rpe is not None and rpe.scale_rpe_query)


def image_bytes(image_size: int, act: int) -> int:
    """The fp32 input image and the copy autocast makes for the patch embedding."""
    pixels = 3 * image_size * image_size
    return 4 * pixels + (act * pixels if act < 4 else 0)


def classifier_other_bytes(tower: Tower, image_size: int, num_classes: int, act: int, global_pool: bool,
                           frozen: bool) -> int:
    """Per image outside the blocks: the input, the final norm (CLS) or fc_norm (global pool), the
    head's input and the loss on the logits (log-softmax output and soft targets, fp32)."""
    n, d = tower.tokens, tower.dim
    head = 8 * num_classes
    if frozen:  # linear probing: BatchNorm in and out before the head
        return image_bytes(image_size, 4) + 8 * d + head
    if global_pool:
        tail = 4 * d + 8 + act * d
    else:  # in fp32 the head keeps a view of the whole normed sequence, under autocast a copy of CLS
        tail = n * (4 * d + 8) + (4 * n * d if act == 4 else act * d)
    return image_bytes(image_size, act) + tail + head


def autoencoder_other_bytes(encoder: Tower, decoder: Tower, image_size: int, patches: int, act: int) -> int:
    """Per view outside the blocks: the input, the encoder's final norm and the decoder embedding's
    input, the decoder's norm and prediction input, the fp32 pixel loss (pred - target) and its mask.
    MAE's encoder (fewer tokens than patches) adds what its two gathers keep: the embedded patches
    before the visible ones are picked (fp32), the decoder tokens before unshuffling, and the shuffle
    and restore indices (int64)."""
    ends = sum(t.tokens * (4 * t.dim + 8 + act * t.dim) for t in (encoder, decoder))
    loss = 4 * 3 * image_size * image_size + 4 * patches
    if encoder.tokens <= patches:
        gathers = patches * (4 * encoder.dim + act * decoder.dim + 16)
    else:  # MAE+: the boolean mask that picks mask token or patch
        gathers = patches
    return image_bytes(image_size, act) + ends + loss + gathers


def parameter_counts(build: Callable[[], nn.Module],
                     trainable: Callable[[nn.Module], nn.Module] = lambda model: model) -> tuple[int, int]:
    """(all parameters, trainable ones) of the model ``build`` makes, built on the meta device (no
    memory, no initialisation cost); ``trainable`` picks the trained part (linear probing: the head)."""
    with torch.device("meta"):
        model = build()
    params = sum(p.numel() for p in model.parameters())
    return params, sum(p.numel() for p in trainable(model).parameters() if p.requires_grad)


def saved_tensor_bytes(model: nn.Module, forward: Callable[[], torch.Tensor],
                       inputs: Iterable[torch.Tensor] = ()) -> int:
    """Bytes autograd keeps for the backward of ``forward()``, plus the ``inputs`` held by the loop:
    distinct storages of the tensors saved by every op, the model's parameters excluded (the
    calibration of the estimate; the difference between two batch sizes is the per-sample part)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in inputs}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward()
    return sum(storages.values())


# --- the plan -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class BatchPlan:
    micro_batch: int  # images per process per forward/backward
    accum_steps: int
    world_size: int
    grad_checkpointing: bool
    gpu_memory_gb: float | None = None  # None: the recipe's accum_steps as given
    peak_bytes: int | None = None  # the estimate at this micro-batch

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.accum_steps * self.world_size

    def describe(self) -> str:
        text = (f"{self.world_size} process(es) x micro-batch {self.micro_batch} x {self.accum_steps} "
                f"accumulation step(s) = {self.global_batch} images per step; activation checkpointing "
                f"{'on' if self.grad_checkpointing else 'off'}")
        if self.gpu_memory_gb is not None and self.peak_bytes is not None:
            text += (f"; estimated {self.peak_bytes / GIB:.1f} GiB of {self.gpu_memory_gb * USABLE_FRACTION:.1f} "
                     f"usable (gpu_memory_gb {self.gpu_memory_gb:g})")
        return text


def fixed_plan(batch_size: int, accum_steps: int, world_size: int, grad_checkpointing: bool = False,
               where: str = "recipe") -> BatchPlan:
    """The recipe's accumulation as given: micro-batch = batch_size / (accum_steps x processes)."""
    per = batch_size // (accum_steps * world_size)
    if per * accum_steps * world_size != batch_size or per == 0:
        raise ConfigError(f"{where}: batch_size {batch_size} is not a multiple of accum_steps {accum_steps} "
                          f"x {world_size} process(es)")
    return BatchPlan(per, accum_steps, world_size, grad_checkpointing)


def plan_batch(batch_size: int, world_size: int, estimate: MemoryEstimate, gpu_memory_gb: float, *,
               min_accum: int = 1, grad_checkpointing: bool | str = "auto", multiple_of: int = 1,
               where: str = "recipe") -> BatchPlan:
    """The fewest accumulation steps (>= ``min_accum``) whose micro-batch fits the card (module docstring).

    ``multiple_of``: the micro-batch must be a multiple of it (Mixup/CutMix pair samples: 2).
    """
    if batch_size % world_size:
        raise ConfigError(f"{where}: batch_size {batch_size} is not a multiple of {world_size} process(es)")
    per_process = batch_size // world_size
    budget = gpu_memory_gb * GIB * USABLE_FRACTION
    micros = [per_process // a for a in range(min_accum, per_process + 1)
              if per_process % a == 0 and (per_process // a) % multiple_of == 0]  # largest first
    if not micros:
        raise ConfigError(f"{where}: no micro-batch splits {per_process} images per process into "
                          f"accum_steps >= {min_accum} parts that are multiples of {multiple_of}")

    def largest_fit(checkpointed: bool, cap: int | None = None) -> int | None:
        return next((m for m in micros if (cap is None or m <= cap) and estimate.peak(m, checkpointed) <= budget),
                    None)

    def plan(micro: int, checkpointed: bool) -> BatchPlan:
        return BatchPlan(micro, per_process // micro, world_size, checkpointed, gpu_memory_gb,
                         estimate.peak(micro, checkpointed))

    if grad_checkpointing == "auto":
        plain = largest_fit(False)
        floor = min(MIN_MICRO_BATCH, micros[0])
        if plain is not None and plain >= floor:
            return plan(plain, False)
        # the smallest micro-batch >= the minimum, so a bigger card (plain fit) never gets a smaller one
        target = min(m for m in micros if m >= floor)
        checkpointed = largest_fit(True, cap=target)
        if checkpointed is not None and (plain is None or checkpointed > plain):
            return plan(checkpointed, True)
        if plain is not None:
            return plan(plain, False)
    else:
        micro = largest_fit(bool(grad_checkpointing))
        if micro is not None:
            return plan(micro, bool(grad_checkpointing))
    smallest = micros[-1]
    need = estimate.peak(smallest, grad_checkpointing is not False) / GIB
    hint = "; set grad_checkpointing: auto or true" if grad_checkpointing is False else ""
    raise ConfigError(f"{where}: even a micro-batch of {smallest} image(s) needs an estimated {need:.1f} GiB "
                      f"per GPU, over {USABLE_FRACTION:.0%} of gpu_memory_gb {gpu_memory_gb:g} "
                      f"({budget / GIB:.1f} GiB){hint}")


def plan_recipe(recipe: ClassifierRecipe | PretrainRecipe, runtime: Runtime, world_size: int,
                workload: Callable[[], Workload], *, multiple_of: int = 1, where: str = "recipe") -> BatchPlan:
    """The plan of a recipe (``batch_size``, ``accum_steps``) on the runtime's ``gpu_memory_gb`` with its
    ``grad_checkpointing``; ``workload`` is only built when a GPU memory is given."""
    accum, checkpointing, memory = recipe.accum_steps, runtime.grad_checkpointing, runtime.gpu_memory_gb
    if memory is None:
        if accum == "auto":
            raise ConfigError(f"{where}: accum_steps 'auto' needs gpu_memory_gb (the memory to plan for)")
        return fixed_plan(recipe.batch_size, accum, world_size, checkpointing is True, where)
    return plan_batch(recipe.batch_size, world_size, estimate_memory(workload(), world_size), memory,
                      min_accum=1 if accum == "auto" else accum, grad_checkpointing=checkpointing,
                      multiple_of=multiple_of, where=where)


def log_plan(plan: BatchPlan, is_main: bool) -> None:
    """Say a plan that came from the memory estimate on stderr (main process only)."""
    if is_main and plan.gpu_memory_gb is not None:
        print_stamped(f"memory plan: {plan.describe()}", file=sys.stderr)


def check_device_memory(plan: BatchPlan, device: torch.device, where: str = "recipe") -> None:
    """Refuse to train on a CUDA card with less memory than the plan assumed (it would run out later)."""
    if plan.gpu_memory_gb is None or device.type != "cuda":
        return
    total = torch.cuda.get_device_properties(device).total_memory
    check_card_memory(total, plan.gpu_memory_gb, str(device), where)


def check_card_memory(total_bytes: int, gpu_memory_gb: float, device: str, where: str = "recipe") -> None:
    # a card sold as 80 GB reports about 79.2 GiB to CUDA, hence the 5 % tolerance
    if total_bytes < 0.95 * gpu_memory_gb * GIB:
        raise ConfigError(f"{where}: gpu_memory_gb {gpu_memory_gb:g} but {device} has "
                          f"{total_bytes / GIB:.1f} GiB; set gpu_memory_gb to the card's memory")


# --- the table of the paper stages (README) -------------------------------------------------------

def stage_workloads(params: dict) -> list[tuple[str, str, SupervisedRun | PretrainRun, Callable[[], Workload], int]]:
    """(stage, experiment, run, workload, micro-batch multiple) of every training job of the DAG."""
    from vitpe.train.pretrain import memory_workload as pretrain_workload
    from vitpe.train.supervised import memory_workload, micro_batch_multiple

    jobs = []
    for name in params["experiments"]["supervised"]:
        run = supervised_run(params, name)
        jobs.append(("supervised", name, run, lambda run=run: memory_workload(run), micro_batch_multiple(run)))
    for name in params["experiments"].get("pretrain", []):
        run = pretrain_run(params, name)
        jobs.append(("pretrain", name, run, lambda run=run: pretrain_workload(run), 1))
    for protocol in ("finetune", "linprobe"):
        for name in params["experiments"].get("pretrain", []):
            run = encoder_run(params, name, protocol)
            jobs.append((protocol, name, run, lambda run=run: memory_workload(run), micro_batch_multiple(run)))
    return jobs


def plan_table(params: dict, world_size: int, memories: list[float]) -> str:
    """A Markdown table: per stage and distinct workload, GiB per image and the plan on each card."""
    header = ["stage", "experiments", "global batch", "views x tokens (width)", "static GiB", "GiB/image (ckpt)"]
    header += [f"{world_size} x {m:g} GB: micro x accum, ckpt, est. GiB" for m in memories]
    rows: dict[tuple, list] = {}
    for stage, name, run, workload, multiple in stage_workloads(params):
        work = workload()
        estimate = estimate_memory(work, world_size)
        towers = " / ".join(f"{t.tokens} ({t.dim})" for t in work.towers)
        cells = [stage, [name], str(run.recipe.batch_size), f"{work.views} x {towers}",
                 f"{estimate.static_bytes / GIB:.2f}",
                 f"{estimate.image_bytes / GIB:.3f} ({estimate.image_bytes_checkpointed / GIB:.3f})"]
        for memory in memories:
            try:
                plan = plan_recipe(run.recipe, dataclasses.replace(run.runtime, gpu_memory_gb=memory), world_size,
                                   lambda: work, multiple_of=multiple, where=f"{stage} {name}")
                cells.append(f"{plan.micro_batch} x {plan.accum_steps}, {'on' if plan.grad_checkpointing else 'off'}, "
                             f"{plan.peak_bytes / GIB:.1f}")
            except ConfigError as exc:
                cells.append(f"does not fit ({exc})")
        key = (stage, *cells[2:])
        if key in rows:
            rows[key][1].append(name)
        else:
            rows[key] = cells
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cells in rows.values():
        lines.append("| " + " | ".join([cells[0], ", ".join(cells[1]), *cells[2:]]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from vitpe.config import load_params

    parser = argparse.ArgumentParser(prog="python -m vitpe.train.memory", description=(
        "Print the memory plan (per-GPU micro-batch x accumulation, activation checkpointing) of every "
        "training stage of a scale, for the given cards."))
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--scale", default="paper")
    parser.add_argument("--gpus", type=int, default=8, help="processes (GPUs) per job (default: 8)")
    parser.add_argument("--memory-gb", type=float, nargs="+", default=[40.0, 80.0], help="card memory, GiB")
    args = parser.parse_args(argv)
    try:
        print(plan_table(load_params(args.params, [f"scale={args.scale}"]), args.gpus, args.memory_gb))
    except VitpeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
