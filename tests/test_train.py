"""Training engine: parameter groups, LR schedule, exact resumption, checkpoint format."""
from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import MICRO_MODEL, NUM_CLASSES, log_records, make_image_folder, micro_run
from vitpe.errors import CheckpointError, ConfigError
from vitpe.evaluate.classification import evaluate_classification
from vitpe.models import build_vit
from vitpe.models.weights import read_metadata
from vitpe.train.optim import build_optimizer, build_scheduler, scaled_lrs, weight_decay_of
from vitpe.train.supervised import train_supervised


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("imagefolder"))


@pytest.fixture(scope="module")
def reference(data_root, tmp_path_factory) -> Path:
    """One uninterrupted micro run (15 steps: 3 epochs x 5) that resumed runs must reproduce."""
    out = tmp_path_factory.mktemp("uninterrupted")
    assert train_supervised(micro_run(data_root), out, device="cpu") == out / "model.safetensors"
    return out


# --- optimizer and schedule --------------------------------------------------------------------

def test_no_weight_decay_on_pos_embed_cls_token_and_1d_params():
    model = build_vit(MICRO_MODEL, NUM_CLASSES, "learnable", drop_path=0.0)
    decay = weight_decay_of(build_optimizer(model, lr=1e-3, weight_decay=0.05), model)
    assert decay["pe.table"] == 0.0 and decay["cls_token"] == 0.0
    assert decay["norm.weight"] == 0.0 and decay["blocks.0.norm1.weight"] == 0.0
    assert decay["head.bias"] == 0.0 and decay["blocks.1.attn.qkv.bias"] == 0.0
    assert decay["head.weight"] == 0.05 and decay["blocks.0.mlp.fc1.weight"] == 0.05
    assert decay["patch_embed.proj.weight"] == 0.05
    decayed = {n for n, wd in decay.items() if wd > 0}
    assert decayed == {n for n, p in model.named_parameters() if p.ndim > 1} - {"pe.table", "cls_token"}


def test_lr_scaling_warmup_and_cosine_values():
    recipe = micro_run(Path("unused"), batch_size=1024, lr_batch_divisor=512, base_lr=5e-4, warmup_lr=5e-7,
                       min_lr=5e-6).recipe
    lr, warmup_lr, min_lr = scaled_lrs(recipe)
    assert (lr, warmup_lr, min_lr) == pytest.approx((1e-3, 1e-6, 1e-5))  # docs/FIDELITY.md row 3
    model = build_vit(MICRO_MODEL, NUM_CLASSES, "learnable", drop_path=0.0)
    optimizer = build_optimizer(model, lr, 0.05)
    scheduler = build_scheduler(optimizer, total_steps=1000, warmup_steps=100, warmup_lr=warmup_lr, min_lr=min_lr)

    def lr_at(step: int) -> list[float]:
        scheduler.step_update(step)
        return [group["lr"] for group in optimizer.param_groups]

    assert lr_at(0) == pytest.approx([1e-6, 1e-6])
    assert lr_at(50)[0] == pytest.approx(1e-6 + 50 * (1e-3 - 1e-6) / 100)  # linear warm-up per iteration
    # after warm-up the cosine runs over the whole schedule (warm-up not prefixed), as the official code
    for t in (100, 500, 999):
        assert lr_at(t)[0] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * t / 1000)))
    assert lr_at(500)[0] == pytest.approx((1e-3 + 1e-5) / 2)
    assert lr_at(1000)[0] == pytest.approx(1e-5)


# --- resumption ---------------------------------------------------------------------------------

def _live_curves(out: Path) -> dict[str, str]:
    """The published dvclive TSVs by name, throughput aside (it is a wall-clock figure)."""
    root = out / "dvclive" / "plots" / "metrics"
    return {str(tsv.relative_to(root)): tsv.read_text() for tsv in sorted(root.rglob("*.tsv"))
            if tsv.name != "imgs_per_s.tsv"}


def test_dvclive_holds_the_logs_scalars_by_step(reference):
    steps = [r for r in log_records(reference) if "loss" in r]
    validations = [r for r in log_records(reference) if "validation" in r]
    curves = _live_curves(reference)
    assert sorted(curves) == ["train/grad_norm.tsv", "train/loss.tsv", "train/lr.tsv", "val/top1.tsv", "val/top5.tsv"]
    assert curves["train/loss.tsv"] == "step\tloss\n" + "".join(f"{r['step']}\t{r['loss']!r}\n" for r in steps)
    assert curves["val/top1.tsv"] == "step\ttop1\n" + "".join(
        f"{r['step']}\t{r['validation']['top1']!r}\n" for r in validations)
    summary = json.loads((reference / "dvclive" / "metrics.json").read_text())
    assert summary["step"] == 15 and summary["train"]["loss"] == steps[-1]["loss"]
    assert summary["val"]["top1"] == validations[-1]["validation"]["top1"]


@pytest.mark.parametrize("stops", [[3], [5, 11]], ids=["mid-epoch", "epoch-boundary+later"])
def test_stopped_and_resumed_run_is_bitwise_identical(data_root, reference, tmp_path, stops):
    run = micro_run(data_root)
    for stop in stops:
        assert train_supervised(run, tmp_path, device="cpu", max_steps=stop) == tmp_path / "state" / "state.pt"
        # published for downstream stages, marked as truncated; the state stays to continue
        assert read_metadata(tmp_path / "model.safetensors")["truncated"] == {"steps": stop, "total_steps": 15}
        assert torch.load(tmp_path / "state" / "state.pt", weights_only=True)["step"] == stop
    assert train_supervised(run, tmp_path, device="cpu") == tmp_path / "model.safetensors"
    assert (tmp_path / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()
    records = log_records(tmp_path)  # the per-epoch validations too, logged once each across the stops
    assert records == log_records(reference) and [r["step"] for r in records if "loss" in r] == list(range(1, 16))
    assert [(r["step"], r["epoch"]) for r in records if "validation" in r] == [(5, 0), (10, 1), (15, 2)]
    # dvclive's curves too: the rows a stopped run logged past its checkpoint are not repeated
    assert _live_curves(tmp_path) == _live_curves(reference)
    metrics = [evaluate_classification(run, out / "model.safetensors", out / "m.json", device="cpu")
               for out in (reference, tmp_path)]
    assert metrics[0] == metrics[1] and metrics[0]["num_images"] == NUM_CLASSES


@pytest.mark.parametrize("variant", [{"repeated_aug": 3}, {"accum_steps": 2, "batch_size": 4},
                                     {"num_workers": 2, "accum_steps": 2, "batch_size": 4}],
                         ids=["repeated-aug", "grad-accumulation", "persistent-workers"])
def test_resume_is_exact_with_repeated_aug_and_accumulation(data_root, tmp_path, variant):
    run = micro_run(data_root, epochs=2, **variant)
    train_supervised(run, tmp_path / "a", device="cpu")
    train_supervised(run, tmp_path / "b", device="cpu", max_steps=3)
    train_supervised(run, tmp_path / "b", device="cpu")
    assert (tmp_path / "a/model.safetensors").read_bytes() == (tmp_path / "b/model.safetensors").read_bytes()
    assert log_records(tmp_path / "a") == log_records(tmp_path / "b")


def test_training_state_is_weights_only_and_complete(data_root, tmp_path):
    train_supervised(micro_run(data_root), tmp_path, device="cpu", max_steps=2)
    state = torch.load(tmp_path / "state" / "state.pt", weights_only=True)
    assert state["step"] == 2 and state["epoch"] == 0 and state["batch"] == 2
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "fingerprint"} <= set(state)
    assert state["model"]["pos_embed"].shape == (1, 17, 32)  # timm key names inside the state too
    assert set(state["rng"][0]) == {"torch", "python", "numpy"}
    assert len(state["optimizer"]["state"]) == len(list(build_vit(MICRO_MODEL, 10, "learnable", 0.0).parameters()))
    lines = (tmp_path / "state" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]
    assert (tmp_path / "log.jsonl").read_text() == "".join(line + "\n" for line in lines)  # published too
    assert set(json.loads(lines[0])) == {"step", "epoch", "loss", "lr", "grad_norm", "imgs_per_s"}


def test_resume_refuses_a_state_from_another_configuration(data_root, tmp_path):
    train_supervised(micro_run(data_root), tmp_path, device="cpu", max_steps=1)
    with pytest.raises(CheckpointError, match=r"recipe\.base_lr: 0\.002 -> 0\.001"):
        train_supervised(micro_run(data_root, base_lr=1e-3), tmp_path, device="cpu")
    # runtime-only settings may change between the two halves of a run
    train_supervised(micro_run(data_root, checkpoint_every=1), tmp_path, device="cpu", max_steps=2)


def test_corrupt_state_raises_checkpoint_error(data_root, tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "state.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable training state"):
        train_supervised(micro_run(data_root), tmp_path, device="cpu")


def test_validation_between_epochs_leaves_the_run_unchanged(data_root, reference, tmp_path):
    """Per-epoch validation (top-1/top-5 on the validation set, logged with the epoch) restores every
    RNG stream and module mode: without it the run computes the same bytes."""
    train_supervised(micro_run(data_root, validate_every=0), tmp_path, device="cpu")
    assert (tmp_path / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()
    assert not any("validation" in r for r in log_records(tmp_path))
    scores = [r["validation"] for r in log_records(reference) if "validation" in r]
    assert len(scores) == 3 and all(0.0 <= s["top1"] <= s["top5"] <= 100.0 for s in scores)
    final = evaluate_classification(micro_run(data_root), reference / "model.safetensors", tmp_path / "m.json",
                                    device="cpu")
    assert scores[-1] == {"top1": final["top1"], "top5": final["top5"]}  # the last one scores the final weights


def test_cached_images_train_the_same_bytes_and_are_decoded_once(data_root, reference, tmp_path, monkeypatch):
    """Runtime.cache_images (the tiny scale's setting, which ``reference`` ran with) keeps each decoded
    image, and each validation sample, for the process: a run that decodes every epoch computes the
    same bytes, and a cached run decodes each training and validation file once over its epochs and
    validations."""
    import vitpe.train.data as data

    assert micro_run(data_root).runtime.cache_images
    train_supervised(micro_run(data_root, cache_images=False), tmp_path / "uncached", device="cpu")
    assert (tmp_path / "uncached" / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()
    assert log_records(tmp_path / "uncached") == log_records(reference)

    decoded: list[str] = []
    loader = data.default_loader
    monkeypatch.setattr(data, "_DECODED", {})
    monkeypatch.setattr(data, "_SAMPLES", {})
    monkeypatch.setattr(data, "default_loader", lambda path: decoded.append(path) or loader(path))
    train_supervised(micro_run(data_root), tmp_path / "cached", device="cpu")
    files = sorted(str(f) for f in data_root.rglob("*") if f.is_file())
    assert sorted(decoded) == files  # 3 epochs and 3 validations, one decode per file


@pytest.mark.parametrize("recipe", ["micro", "paper", "paper_pretrain", "paper_pretrain_mae_plus"])
def test_normalizing_the_batch_gives_the_per_image_bytes(data_root, recipe):
    """split_normalize moves a closing ToTensor + Normalize onto the collated batch: the same random
    draws and the same float32 batch, bit for bit, for the micro classifier recipe (RandAugment, no
    RandomErasing), the paper's (whose RandomErasing keeps the per-image pipeline) and MAE's and MAE+'s
    pretraining views."""
    from torch.utils.data import default_collate

    from vitpe.train.data import NormalizeBatch, image_folder, split_normalize, train_transform
    from vitpe.train.pretrain import MultiCrop, view_transform

    if recipe.startswith("paper_pretrain"):
        transform = view_transform(16, (0.2, 1.0), 0.5)
    else:
        run = micro_run(data_root, **({} if recipe == "micro" else {
            "crop_scale": [0.08, 1.0], "hflip": 0.5, "randaugment": "rand-m9-mstd0.5-inc1", "reprob": 0.25}))
        transform = train_transform(run.recipe, 16)
    per_image, collate = split_normalize(transform)
    if recipe.endswith("mae_plus"):  # MAE+ stacks 4 draws of the split view, as build_pretrain does
        transform, per_image = MultiCrop(transform, 4), MultiCrop(per_image, 4)
    if recipe == "paper":  # RandomErasing follows Normalize: nothing moves
        assert per_image is transform and collate is None
        return
    assert isinstance(collate, NormalizeBatch)

    def batch(pipeline, collate_fn):
        random.seed(3)
        np.random.seed(3)  # RandAugment's op choice
        torch.manual_seed(3)
        folder = image_folder(data_root / "train", pipeline)
        return collate_fn([folder[i] for i in range(6)]), (random.random(), np.random.rand(), torch.rand(1).item())

    (expected, targets), after = batch(transform, default_collate)
    (images, same_targets), same_after = batch(per_image, collate)
    assert images.dtype == torch.float32 and images.shape == expected.shape
    assert torch.equal(images, expected) and torch.equal(targets, same_targets)
    assert after == same_after  # the same draws, so everything downstream draws the same


def test_completion_publishes_weights_and_log_and_drops_the_state(data_root, reference, tmp_path):
    assert sorted(p.name for p in reference.iterdir() if p.suffix != ".json") == ["dvclive", "log.jsonl",
                                                                                    "model.safetensors"]
    # a rerun (Snakemake deletes the declared outputs first) trains from scratch to the same bytes
    train_supervised(micro_run(data_root), tmp_path, device="cpu")
    assert (tmp_path / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()


def test_batch_must_split_over_accumulation(data_root, tmp_path):
    with pytest.raises(ConfigError, match="batch_size 4 is not a multiple of accum_steps 3"):
        train_supervised(micro_run(data_root, accum_steps=3), tmp_path, device="cpu")


def test_every_trainer_starts_a_rank_by_planning_then_seeding_seed_plus_rank(data_root):
    from vitpe.train.distributed import DistEnv
    from vitpe.train.prelude import loop_settings, start_rank
    from vitpe.train.supervised import batch_plan

    run = micro_run(data_root)
    env = DistEnv(rank=1, world_size=2, local_rank=1, device=torch.device("cpu"))
    plan = start_rank(run, env, batch_plan, "supervised test")
    drawn = torch.rand(3)
    torch.manual_seed(run.seed + 1)  # the official seed + rank
    assert torch.equal(drawn, torch.rand(3))
    assert plan.world_size == 2 and plan.micro_batch * plan.accum_steps * 2 == run.recipe.batch_size
    settings = loop_settings(run, plan, steps_per_epoch=5, train_images=40, find_unused_parameters=False)
    assert settings.fingerprint == {"run": settings.weights_metadata, "world_size": 2, "train_images": 40}
    assert settings.weights_metadata["recipe"]["accum_steps"] == settings.accum_steps == plan.accum_steps
    assert settings.total_steps == run.recipe.epochs * 5


class _Draws(torch.utils.data.Dataset):
    """Each sample: its index, a Python, a NumPy and a torch random draw, and the worker's pid."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([index, random.random(), np.random.rand(), torch.rand(()).item(), os.getpid()],
                            dtype=torch.float64)


def test_loader_workers_persist_and_each_sample_draws_the_same_wherever_an_epoch_resumes():
    from torch.utils.data import DistributedSampler

    from vitpe.train.data import ResumableSampler, TrainData

    def data(workers: int) -> TrainData:
        sampler = ResumableSampler(DistributedSampler(_Draws(), num_replicas=1, rank=0, shuffle=True), seed=7)
        return TrainData(_Draws(), sampler, batch_size=2, num_workers=workers, seed=7, pin_memory=False)

    two, one = data(2), data(1)
    try:
        epochs = [torch.cat(list(two.loader(epoch))) for epoch in (0, 1)]
        assert epochs[0][:, 4].unique().tolist() == epochs[1][:, 4].unique().tolist()  # the same 2 workers
        assert len(epochs[0][:, 4].unique()) == 2 and not torch.equal(epochs[0][:, :4], epochs[1][:, :4])
        resumed = torch.cat(list(two.loader(1, skip_batches=2)))  # epoch 1 from its third batch
        torch.testing.assert_close(resumed[:, :4], epochs[1][4:, :4], rtol=0, atol=0)
        other = torch.cat(list(one.loader(1)))  # what a sample draws does not depend on the workers
        torch.testing.assert_close(other[:, :4], epochs[1][:, :4], rtol=0, atol=0)
    finally:
        two.close()
        one.close()


def test_autocast_applies_on_cuda_only():
    """``amp`` / ``eval_amp``: autocast to the named dtype on CUDA; the CPU always runs fp32."""
    import contextlib
    import warnings

    from vitpe.train.distributed import autocast

    assert all(isinstance(autocast(device, amp), contextlib.nullcontext)
               for device in ("cpu", torch.device("cpu")) for amp in ("none", "bf16", "fp16"))
    assert isinstance(autocast("cuda", "none"), contextlib.nullcontext)
    with warnings.catch_warnings():  # "CUDA is not available ... Disabling autocast" on a CPU-only machine
        warnings.simplefilter("ignore")
        assert autocast("cuda", "bf16").fast_dtype == torch.bfloat16
        assert autocast(torch.device("cuda", 0), "fp16").fast_dtype == torch.float16


def test_fused_optimizer_trains_what_the_loop_trains_within_rounding(data_root, reference, tmp_path, monkeypatch):
    """``fused_optimizer`` (the paper recipes): torch's fused AdamW kernel gives the per-parameter loop's
    weights within float rounding (not bitwise), also for AdPE's ascending δ (pre/post-step hooks)."""
    from safetensors.torch import load_file
    from test_finetune import micro_pretrain

    from vitpe.config import load_params
    from vitpe.runs import with_recipe
    from vitpe.train import optim, pretrain

    made = []
    factory = optim.create_optimizer_v2  # both trainers' AdamW: optim.build_optimizer, through timm's factory
    monkeypatch.setattr(optim, "create_optimizer_v2", lambda *a, **k: made.append(factory(*a, **k)) or made[-1])
    train_supervised(micro_run(data_root, fused_optimizer=True), tmp_path / "fused", device="cpu")
    fused, loop = (load_file(str(out / "model.safetensors")) for out in (tmp_path / "fused", reference))
    assert made[-1].defaults["fused"] is True
    assert any(not torch.equal(fused[k], loop[k]) for k in loop)  # a different kernel, really used
    # the key bias has gradients of float noise only (the softmax ignores it), which Adam's normalisation
    # turns into lr-sized steps of either sign: hence an absolute tolerance of the lr's order
    for key in loop:
        torch.testing.assert_close(fused[key], loop[key], rtol=1e-3, atol=1e-4, msg=key)
    losses = [[r["loss"] for r in log_records(out) if "loss" in r] for out in (tmp_path / "fused", reference)]
    assert len(losses[0]) == 15 and np.allclose(losses[0], losses[1], rtol=1e-5)
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    deltas = {}
    for fused_kernel in (False, True):
        run = with_recipe(micro_pretrain(params, "adpe_abs_coordinate", data_root), fused_optimizer=fused_kernel)
        out = tmp_path / f"adpe_{fused_kernel}"
        pretrain.train_pretrain(run, out, device="cpu")
        assert made[-1].defaults["fused"] is (True if fused_kernel else None)
        deltas[fused_kernel] = load_file(str(out / "model.safetensors"))
    for key in deltas[False]:
        torch.testing.assert_close(deltas[True][key], deltas[False][key], rtol=1e-3, atol=1e-4, msg=key)
