"""The memory plan: exact global batch, monotone in the card, activation checkpointing that changes
nothing, and the estimate against the bytes autograd really keeps (vitpe.train.memory)."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from conftest import ROOT, log_records, make_image_folder, micro_run
from vitpe.config import load_params
from vitpe.runs import Runtime, encoder_run, pretrain_run, supervised_run, with_recipe
from vitpe.errors import CheckpointError, ConfigError
from vitpe.train.pretrain import build_autoencoder
from vitpe.train.pretrain import memory_workload as pretrain_workload
from vitpe.mjp.forward import ShuffledForward
from vitpe.mjp.jigsaw import draw_jigsaw
from vitpe.train import memory
from vitpe.train.memory import (GIB, USABLE_FRACTION, MemoryEstimate, check_card_memory, estimate_memory,
                                plan_batch, plan_recipe, saved_tensor_bytes, stage_workloads, stored_bytes)
from vitpe.train.supervised import batch_plan, build_model, memory_workload, train_supervised


@pytest.fixture(scope="module")
def tiny() -> dict:
    return load_params(ROOT / "params.yaml", ["scale=tiny"])


@pytest.fixture(scope="module")
def paper_jobs() -> list:
    """Every training job of the paper scale, with its workload built once."""
    params = load_params(ROOT / "params.yaml", ["scale=paper"])
    return [(stage, name, run, workload(), multiple)
            for stage, name, run, workload, multiple in stage_workloads(params)]


def _plan(run, world, work, multiple, **keys):
    run = with_recipe(run, **keys)
    return plan_recipe(run.recipe, run.runtime, world, lambda: work, multiple_of=multiple)


def _split(tiny: dict, batch_size: int, accum_steps: int | str):
    """plan_recipe's arguments for a recipe with this batch and accumulation, no GPU memory."""
    recipe = supervised_run(tiny, "deit_s").recipe
    return dataclasses.replace(recipe, batch_size=batch_size, accum_steps=accum_steps), Runtime()


# --- the plan -----------------------------------------------------------------------------------

@pytest.mark.parametrize("world", [1, 2, 8])
@pytest.mark.parametrize("gpu_memory_gb", [40, 80])
def test_plan_splits_every_paper_global_batch_exactly_and_fits(paper_jobs, world, gpu_memory_gb):
    assert {stage for stage, *_ in paper_jobs} == {"supervised", "pretrain", "finetune", "linprobe"}
    for stage, name, run, work, multiple in paper_jobs:
        plan = _plan(run, world, work, multiple, gpu_memory_gb=gpu_memory_gb)
        budget = gpu_memory_gb * GIB * USABLE_FRACTION
        assert plan.micro_batch * plan.accum_steps * world == run.recipe.batch_size, (stage, name)
        assert plan.peak_bytes <= budget and plan.micro_batch % multiple == 0, (stage, name)
        # the fewest steps: every larger micro-batch that splits the batch would not fit
        per_process = run.recipe.batch_size // world
        larger = [m for m in range(plan.micro_batch + 1, per_process + 1) if per_process % m == 0 and m % multiple == 0]
        estimate = estimate_memory(work, world)
        assert all(estimate.peak(m, plan.grad_checkpointing) > budget for m in larger), (stage, name)


def test_paper_plans_on_8_cards_of_40_and_80_gb(paper_jobs):
    """The numbers the README states: MAE+/AdPE accumulate twice on 40 GB, nothing else needs to."""
    for stage, name, run, work, multiple in paper_jobs:
        plans = {m: _plan(run, 8, work, multiple, gpu_memory_gb=m) for m in (40, 80)}
        assert not plans[40].grad_checkpointing and not plans[80].grad_checkpointing
        assert (plans[80].micro_batch, plans[80].accum_steps) == (run.recipe.batch_size // 8, 1)
        mae_plus = stage == "pretrain" and name != "mae"
        expected = (256, 2) if mae_plus else (run.recipe.batch_size // 8, 1)
        assert (plans[40].micro_batch, plans[40].accum_steps) == expected, (stage, name)
    mae_plus = next(work for stage, name, _, work, _ in paper_jobs if name == "mae_plus_abs" and stage == "pretrain")
    # 47-65 GiB per GPU at 512 images (2048 crops of 112 px) on one card, as estimated by hand
    assert 45 < estimate_memory(mae_plus, 8).peak(512, False) / GIB < 65


@pytest.mark.parametrize("checkpointing", ["auto", True, False])
def test_a_bigger_card_never_gets_a_smaller_micro_batch(paper_jobs, checkpointing):
    for stage, name, recipe, work, multiple in paper_jobs:
        last = 0
        for gpu_memory_gb in range(4, 168, 4):
            try:
                plan = _plan(recipe, 8, work, multiple, gpu_memory_gb=gpu_memory_gb, grad_checkpointing=checkpointing)
            except ConfigError:
                assert last == 0, (stage, name, gpu_memory_gb)  # once it fits, more memory fits too
                continue
            assert plan.micro_batch >= last, (stage, name, gpu_memory_gb)
            last = plan.micro_batch


def _synthetic(image_gib: float = 1.0, checkpointed_gib: float = 0.25) -> MemoryEstimate:
    return MemoryEstimate(0, int(image_gib * GIB), int(checkpointed_gib * GIB))


def _card(usable_gib: float) -> float:
    return usable_gib / USABLE_FRACTION


def test_auto_checkpointing_only_when_the_minimum_micro_batch_does_not_fit():
    est = _synthetic()  # 1 GiB per image plain, 0.25 GiB checkpointed; 128 images per process
    roomy = plan_batch(1024, 8, est, _card(40), grad_checkpointing="auto")
    assert (roomy.micro_batch, roomy.accum_steps, roomy.grad_checkpointing) == (32, 4, False)
    tight = plan_batch(1024, 8, est, _card(16), grad_checkpointing="auto")  # plain: 16 < 32 images
    assert (tight.micro_batch, tight.accum_steps, tight.grad_checkpointing) == (32, 4, True)
    assert plan_batch(1024, 8, est, _card(16), grad_checkpointing=False).micro_batch == 16
    assert plan_batch(1024, 8, est, _card(40), grad_checkpointing=True).micro_batch == 128
    # a per-process batch under the minimum is the minimum itself
    assert not plan_batch(64, 8, est, _card(9), grad_checkpointing="auto").grad_checkpointing


def test_recipe_accum_steps_is_a_minimum_and_mixup_keeps_micro_batches_even():
    est = _synthetic(0.001)
    assert plan_batch(1024, 8, est, 80, min_accum=4).accum_steps == 4
    assert plan_batch(24, 1, est, 80, min_accum=2).micro_batch == 12
    # 24 images per process: 3 steps would give 8, 8 is even; 24 / 8 = 3 odd is skipped with multiple_of 2
    odd_split = plan_batch(24, 1, _synthetic(1.0), _card(8.5), multiple_of=2, grad_checkpointing=False)
    assert (odd_split.micro_batch, odd_split.accum_steps) == (8, 3)
    assert plan_batch(6, 1, _synthetic(1.0), _card(2.5), multiple_of=2, grad_checkpointing=False).micro_batch == 2
    assert plan_batch(6, 1, _synthetic(1.0), _card(2.5), grad_checkpointing=False).micro_batch == 2


def test_no_fit_and_bad_splits_fail_with_one_line_naming_the_key(tiny):
    with pytest.raises(ConfigError, match=r"pretrain x: even a micro-batch of 1 image\(s\) needs an estimated "
                                          r"1\.0 GiB per GPU, over 85% of gpu_memory_gb 1 .*grad_checkpointing"):
        plan_batch(64, 1, _synthetic(), 1, grad_checkpointing=False, where="pretrain x")
    with pytest.raises(ConfigError, match="batch_size 100 is not a multiple of 8 process"):
        plan_batch(100, 8, _synthetic(), 80)
    with pytest.raises(ConfigError, match="accum_steps 'auto' needs gpu_memory_gb"):
        plan_recipe(*_split(tiny, 64, "auto"), 1, lambda: None)


def test_without_gpu_memory_the_recipe_accumulation_is_used_as_given(tiny):
    def never():
        raise AssertionError("no workload without gpu_memory_gb")

    for world in (1, 2, 4):
        plan = plan_recipe(*_split(tiny, 64, 2), world, never)
        assert (plan.micro_batch, plan.accum_steps, plan.grad_checkpointing) == (64 // (2 * world), 2, False)
    run = supervised_run(tiny, "deit_s")  # the tiny scale has no gpu_memory_gb: exactly today's split
    assert run.runtime.gpu_memory_gb is None
    plan = batch_plan(run, 2)
    assert (plan.micro_batch, plan.accum_steps) == (run.recipe.batch_size // 2, run.recipe.accum_steps)
    with pytest.raises(ConfigError, match="batch_size 64 is not a multiple of accum_steps 3"):
        plan_recipe(*_split(tiny, 64, 3), 1, never)


def test_a_card_smaller_than_configured_is_refused():
    check_card_memory(int(79.2 * GIB), 80, "cuda:0")  # an 80 GB card as CUDA reports it
    with pytest.raises(ConfigError, match="pretrain mae: gpu_memory_gb 80 but cuda:0 has 39.4 GiB"):
        check_card_memory(int(39.4 * GIB), 80, "cuda:0", "pretrain mae")


def test_the_table_script_prints_what_the_readme_states(capsys):
    assert memory.main(["--params", str(ROOT / "params.yaml")]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].startswith("| stage | experiments | global batch |") and len(table) >= 6
    assert any("mae_plus_abs" in row and "| 256 x 2, off," in row for row in table)
    readme = (ROOT / "README.md").read_text()
    missing = [row for row in table if row not in readme]
    assert not missing, f"README's memory table differs from `python -m vitpe.train.memory`: {missing[0]}"


# --- the estimate against the bytes autograd keeps ----------------------------------------------

def _per_image(model: nn.Module, forward, make_inputs) -> float:
    """Saved-tensor bytes per image: the difference between batches of 4 and 2 images, halved."""
    counts = []
    for batch in (2, 4):
        inputs = make_inputs(batch)
        counts.append(saved_tensor_bytes(model, lambda: forward(*inputs), inputs))
    return (counts[1] - counts[0]) / 2


def _autocast(amp: str):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp != "none")


def _classifier_case(run, amp, checkpointed):
    run = with_recipe(run, amp=amp)
    model = build_model(run)
    model.set_grad_checkpointing(checkpointed)
    size = run.model.img_size

    def forward(images, targets):
        with _autocast(amp):
            return nn.functional.cross_entropy(model(images), targets)

    counted = _per_image(model, forward, lambda b: [torch.randn(b, 3, size, size), torch.randint(0, 10, (b,))])
    return counted, stored_bytes(memory_workload(run), checkpointed)


def _autoencoder_case(run, amp, checkpointed):
    run = with_recipe(run, amp=amp)
    model = build_autoencoder(run)
    model.set_grad_checkpointing(checkpointed)
    crops, size = run.crops.num_crops, run.crops.crop_size

    def forward(views):
        with _autocast(amp):
            return model(views)[0]

    counted = _per_image(model, forward, lambda b: [torch.randn(b * crops, 3, size, size)])
    return counted, stored_bytes(pretrain_workload(run), checkpointed)


CASES = {  # stage, experiment, amp, checkpointing
    "deit_s-fp32": ("supervised", "deit_s", "none", False),
    "deit_s-bf16": ("supervised", "deit_s", "bf16", False),
    "deit_s-bf16-checkpointed": ("supervised", "deit_s", "bf16", True),
    "finetune-global-pool-bf16": ("finetune", "mae", "bf16", False),
    "mae-fp32": ("pretrain", "mae", "none", False),
    "mae-bf16": ("pretrain", "mae", "bf16", False),
    "mae_plus-4-crops-bf16": ("pretrain", "mae_plus_abs", "bf16", False),
    "adpe-coordinate-bf16-checkpointed": ("pretrain", "adpe_abs_coordinate", "bf16", True),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_estimate_equals_the_saved_tensor_bytes_within_two_percent(tiny, case):
    stage, name, amp, checkpointed = CASES[case]
    if stage == "pretrain":
        counted, estimated = _autoencoder_case(pretrain_run(tiny, name), amp, checkpointed)
    else:
        run = supervised_run(tiny, name) if stage == "supervised" else encoder_run(tiny, name, stage)
        counted, estimated = _classifier_case(run, amp, checkpointed)
    assert counted > 0 and abs(counted / estimated - 1) < 0.02, (counted, estimated)


@pytest.mark.parametrize("name", ["mae_plus_rel", "adpe_rel_coordinate"])
def test_rpe_estimate_is_within_a_third_of_the_cpu_count(tiny, name):
    """With iRPE the attention takes a bias; on CUDA the memory-efficient kernel keeps it (the
    estimate), on CPU the unfused math path also keeps the fp32 probabilities: a larger count."""
    counted, estimated = _autoencoder_case(pretrain_run(tiny, name), "bf16", False)
    assert 1.0 <= counted / estimated < 1.35, (counted, estimated)


def test_linear_probing_keeps_no_encoder_activations(tiny):
    run = encoder_run(tiny, "mae", "linprobe")
    model = build_model(run)
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("head.")
    size = run.model.img_size
    counted = _per_image(model, lambda x, y: nn.functional.cross_entropy(model(x), y),
                         lambda b: [torch.randn(b, 3, size, size), torch.randint(0, 10, (b,))])
    estimated = stored_bytes(memory_workload(run))
    assert counted <= estimated < 1.5 * counted, (counted, estimated)


# --- activation checkpointing changes nothing -------------------------------------------------

def _grads(model: nn.Module, loss_of) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(0)  # DropPath and masks draw the same numbers in both runs
    model.zero_grad(set_to_none=True)
    loss = loss_of(model)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_checkpointing_changes_nothing(model: nn.Module, loss_of) -> None:
    plain_loss, plain = _grads(model, loss_of)
    model.set_grad_checkpointing(True)
    loss, grads = _grads(model, loss_of)
    model.set_grad_checkpointing(False)
    assert torch.equal(loss, plain_loss)
    assert grads.keys() == plain.keys() and len(grads) > 10
    for name in plain:
        assert torch.allclose(grads[name], plain[name], rtol=1e-6, atol=1e-8), name


@pytest.mark.parametrize("name", ["deit_s", "mjp"])
def test_checkpointing_gives_the_same_loss_and_gradients_supervised(tiny, name):
    run = supervised_run(tiny, name)
    model = build_model(run, drop_path=0.2)
    images, targets = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    jigsaw = draw_jigsaw("mjp", model.grid_size, 1, 0.3, model.patch_size)  # the unknown PE row and DAL

    def loss_of(net):
        if run.dal is None:
            return nn.functional.cross_entropy(net(images), targets)
        logits, dal = ShuffledForward(net)(images, jigsaw, with_dal=True)
        return nn.functional.cross_entropy(logits, targets) + 0.01 * dal

    _assert_checkpointing_changes_nothing(model, loss_of)


def test_checkpointing_gives_the_same_loss_and_gradients_finetune_with_irpe(tiny):
    model = build_model(encoder_run(tiny, "mae_plus_rel", "finetune"), drop_path=0.2)
    images, targets = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    _assert_checkpointing_changes_nothing(model, lambda net: nn.functional.cross_entropy(net(images), targets))


@pytest.mark.parametrize("name", ["mae", "adpe_abs_embedding", "adpe_abs_coordinate", "adpe_rel_embedding",
                                  "adpe_rel_coordinate"])
def test_checkpointing_gives_the_same_loss_and_gradients_pretrain(tiny, name):
    run = pretrain_run(tiny, name)
    model = build_autoencoder(run)
    size = run.crops.crop_size
    views = torch.randn(8, 3, size, size)
    _assert_checkpointing_changes_nothing(model, lambda net: net(views)[0])
    if run.adversary is not None:  # the δ gets its gradient through the checkpointed blocks too
        assert any(n.endswith("adv_delta") for n, p in model.named_parameters() if p.grad is not None)


# --- the plan in training -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imagefolder"))


def test_training_runs_the_plan_and_equals_the_same_split_given_by_hand(data_root, tmp_path):
    """A card that fits 2 of the 4 images per step: the plan accumulates twice, and trains exactly
    what accum_steps 2 trains; activation checkpointing on top changes no byte of the weights."""
    by_hand = micro_run(data_root, epochs=1, accum_steps=2)
    estimate = estimate_memory(memory_workload(by_hand), 1)
    card = estimate.peak(2, False) / GIB / USABLE_FRACTION * 1.001
    planned = micro_run(data_root, epochs=1, accum_steps="auto", gpu_memory_gb=card, grad_checkpointing=False)
    plan = batch_plan(planned, 1)
    assert (plan.micro_batch, plan.accum_steps, plan.grad_checkpointing) == (2, 2, False)
    checkpointed = micro_run(data_root, epochs=1, accum_steps=2, grad_checkpointing=True)
    for run, out in ((by_hand, "hand"), (planned, "plan"), (checkpointed, "ckpt")):
        train_supervised(run, tmp_path / out, device="cpu")
    weights = {out: (tmp_path / out / "model.safetensors").read_bytes() for out in ("hand", "plan", "ckpt")}
    assert weights["plan"] == weights["hand"] and weights["ckpt"] == weights["hand"]
    assert log_records(tmp_path / "plan") == log_records(tmp_path / "hand")  # losses and validations

    # a resumed run on another card (another split) is refused, naming the accumulation
    train_supervised(planned, tmp_path / "resume", device="cpu", max_steps=1)
    bigger = micro_run(data_root, epochs=1, accum_steps="auto", gpu_memory_gb=80, grad_checkpointing=False)
    with pytest.raises(CheckpointError, match=r"recipe\.accum_steps: 2 -> 1"):
        train_supervised(bigger, tmp_path / "resume", device="cpu")
