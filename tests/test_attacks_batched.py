"""Batched reconstructions and the attack budget: several independent tasks in one vmapped objective
give each task its own reconstruction; the task split covers every image once; the paper budget fits
its task limit."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import ROOT
from vitpe.attacks import budget
from vitpe.attacks.gradvit import BNStatisticsPrior, GradViTSettings, gradvit_batch, patch_prior
from vitpe.attacks.inverting_gradients import IGSettings, cosine_distance, inverting_gradients_batch, total_variation
from vitpe.attacks.matching import InversionTask, _autograd_step, _layer_norm, _vmap_step, gradient_distance, group_tasks
from vitpe.attacks.threat import ThreatModel, box_bounds, client_update, detect_unknown_rows, prepare_model
from vitpe.config import load_params
from vitpe.errors import ConfigError
from vitpe.mjp.dal import attach_dal
from vitpe.models import build_vit

CFG = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)


def _tasks(pe: str = "learnable", mode: str = "plain", count: int = 3, dtype=torch.float64):
    """``count`` single-image client steps of one micro ViT (MJP: unknown PE, DAL, the detected mask)."""
    torch.manual_seed(0)
    dal = pe == "mjp"
    model = build_vit(CFG, 10, pe, 0.0)
    if dal:
        attach_dal(model, "nonlinear")
    model = prepare_model(model).to(dtype)
    tasks = []
    for i in range(count):
        x = torch.rand(1, 3, 16, 16, dtype=dtype, generator=torch.Generator().manual_seed(i)) * 2 - 1
        update = client_update(model, x, torch.tensor([i]), mode, ThreatModel(shuffle_ratio=0.3), 4, seed=i,
                               dal_weight=0.01 if dal else 0.0)
        mask = detect_unknown_rows(update, model) if pe == "mjp" else None
        tasks.append(InversionTask(update.gradients, update.labels, tuple(x.shape), 100 + i, mask,
                                   update.dal_weight if mask is not None else 0.0))
    return model, tasks


def _ig_objective(x, grads, target):
    value = cosine_distance(grads, target) + 0.2 * total_variation(x)
    return value, value


def _gradvit_objective(x, grads, target):
    match = gradient_distance(grads, target, "cosine")
    return 4e-3 * match + 1e-4 * patch_prior(x, 4) + 1e-4 * x.norm(), match


def test_layer_norm_composite_equals_the_kernel():
    x, w, b = (torch.randn(*shape, dtype=torch.float64) for shape in ((2, 5, 8), (8,), (8,)))
    expected = torch.nn.functional.layer_norm(x, (8,), w, b, 1e-6)
    assert torch.allclose(_layer_norm(x, (8,), w, b, 1e-6), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("pe, mode", [("learnable", "plain"), ("mjp", "shuffled")])
@pytest.mark.parametrize("objective", [_ig_objective, _gradvit_objective])
def test_vmapped_step_gives_each_task_its_own_objective_and_gradient(pe, mode, objective):
    """float64: the vmapped double backward equals each task's autograd one to rounding (1e-12 relative).
    Before the composite layer norm the vmapped x-gradient was off by ~1e-4 relative."""
    model, tasks = _tasks(pe, mode)
    if pe == "mjp":
        assert all(task.unk is not None and task.unk.sum() > 0 and task.dal_weight == 0.01 for task in tasks)
    x = torch.rand(len(tasks), 1, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    values, reported, grads = _vmap_step(model, tasks)(x.clone().requires_grad_(True), objective)
    for i, task in enumerate(tasks):
        value, rep, grad = _autograd_step(model, task)(x[i:i + 1].clone().requires_grad_(True), objective)
        assert float(values[i]) == pytest.approx(float(value[0]), rel=1e-12)
        assert float(reported[i]) == pytest.approx(float(rep[0]), rel=1e-12)
        assert float((grads[i] - grad[0]).abs().max() / grad.abs().max()) < 1e-12


@pytest.mark.parametrize("pe, mode", [("learnable", "plain"), ("mjp", "shuffled")])
def test_batched_attacks_equal_the_unbatched_reconstructions(pe, mode):
    """Inverting Gradients (two restarts) and GradViT over 3 tasks at once vs each alone, same seeds:
    float64 reconstructions agree to 1e-9 (the sign and the Adam steps amplify rounding only slowly)."""
    model, tasks = _tasks(pe, mode)
    box = tuple(b.double() for b in box_bounds((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    ig = IGSettings(iterations=6, restarts=2)
    gv = GradViTSettings(iterations=6, switch=0.5)
    prior = BNStatisticsPrior(_small_cnn()).double()
    for run in (lambda ts: inverting_gradients_batch(model, ts, box, ig),
                lambda ts: gradvit_batch(model, ts, box, gv, 4, prior)):
        together = run(tasks)
        for task, result in zip(tasks, together):
            alone, = run([task])
            assert result.info["batched"] == len(tasks) and alone.info["batched"] == 1
            assert float((result.images - alone.images).abs().max()) < 1e-9
            assert result.objective == pytest.approx(alone.objective, rel=1e-9)
            assert result.info.get("restart") == alone.info.get("restart")
        # the tasks are really different reconstructions (not one image broadcast)
        assert float((together[0].images - together[1].images).abs().max()) > 0.1


def _small_cnn() -> torch.nn.Module:
    torch.manual_seed(3)
    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 4, 3), torch.nn.BatchNorm2d(4))
    for module in cnn:  # non-trivial running statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return cnn


def test_float32_batched_attacks_stay_within_float_tolerance():
    """The attacks' own precision: float32, 6 iterations, per-image max difference stated below."""
    model, tasks = _tasks(dtype=torch.float32)
    box = box_bounds((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    ig, gv = IGSettings(iterations=6), GradViTSettings(iterations=6)
    for run, tol in ((lambda ts: inverting_gradients_batch(model, ts, box, ig), 1e-5),
                     (lambda ts: gradvit_batch(model, ts, box, gv, 4), 1e-4)):
        for task, result in zip(tasks, run(tasks)):
            assert float((result.images - run([task])[0].images).abs().max()) < tol


def test_tasks_group_by_signature_and_chunk():
    model, plain = _tasks(count=3)
    _, other = _tasks(count=2)
    masked = [InversionTask(j.gradients, j.labels, j.shape, j.seed, torch.zeros(16, dtype=torch.bool)) for j in other]
    tasks = [plain[0], masked[0], plain[1], plain[2], masked[1]]
    assert group_tasks(model, tasks, 2) == [[0, 2], [3], [1, 4]]
    assert group_tasks(model, tasks, 1) == [[0], [2], [3], [1], [4]]
    with pytest.raises(ValueError, match="share"):
        _vmap_step(model, [plain[0], masked[0]])


@pytest.mark.parametrize("count, batch, jobs", [(100, 1, 4), (100, 1, 7), (10, 3, 3), (5, 2, 1), (4, 1, 4)])
def test_job_ranges_cover_every_image_once_in_whole_batches(count, batch, jobs):
    ranges = budget.job_ranges(count, batch, jobs)
    assert len(ranges) == jobs and [i for r in ranges for i in r] == list(range(count))
    assert all(r.start % batch == 0 and len(r) > 0 for r in ranges)
    batches = [math.ceil(len(r) / batch) for r in ranges]
    assert max(batches) - min(batches) <= 1


def test_jobs_are_at_most_one_per_client_batch_and_one_for_closed_forms():
    assert budget.jobs_for("supervised", 10, 100, 1) == 10 and budget.jobs_for("finetuned", 10, 2, 1) == 2
    assert budget.jobs_for("supervised", 10, 7, 3) == 3 and budget.jobs_for("april", 10, 100, 1) == 1
    with pytest.raises(ConfigError, match="4 in 4 client batches of 1, fewer than the 5 jobs planned"):
        budget.job_ranges(4, 1, 5)  # fewer images on disk than configured


def test_runtime_arithmetic_by_hand():
    cost = budget.DeviceCost(op_us=10.0, gflops=1000.0, basis="test")
    model = dict(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0)
    # ViT-S/16: 196 patches + CLS; 4.6 GMACs is timm's published figure
    assert budget.vit_forward_flops(model) / 2e9 == pytest.approx(4.6, rel=0.02)
    its = budget.objective_iterations(25, 1, 10, 2, {"inverting_gradients": 24000, "gradvit": 120000}, 1)
    assert its == 2 * 3 * 144000  # 25 images in chunks of 10: 3 objectives per client mode
    est = budget.estimate_job(100, 4, 1, 10, 2, {"inverting_gradients": 24000, "gradvit": 120000}, 1, model, cost)
    seconds = (budget.OPS_FIXED + budget.OPS_PER_BLOCK * 12) * 10e-6 \
        + 10 * budget.FLOPS_PER_FORWARD * budget.vit_forward_flops(model) / 1e12
    assert est.images == 25 and est.iterations == its and est.chunk_images == 10
    assert est.seconds_per_iteration == pytest.approx(seconds)
    assert est.minutes == math.ceil(budget.MARGIN * its * seconds / 60 + budget.OVERHEAD_MINUTES)


def test_paper_budget_fits_the_72_hour_job_limit():
    """Every attacked model of the paper scale (ViT-S/16 supervised, ViT-B/16 fine-tuned, the APRIL
    variants) on one GPU per job: the largest job's modelled runtime is within 72 h."""
    params = {**load_params(ROOT / "params.yaml"), "scale": "paper"}
    cfg, scale = params["attacks"], params["scales"]["paper"]["attacks"]
    assert scale["images"] == 100 and scale["iterations"] == {"inverting_gradients": 24000, "gradvit": 120000}
    kinds = [(e, "supervised") for e in cfg["models"]] + [(e, "finetuned") for e in cfg["finetuned"]] \
        + [(e, "april") for e in cfg["april_models"]]
    for exp, kind in kinds:
        est = budget.attack_job_estimate(params, exp, kind, "gpu")
        assert est.minutes <= 72 * 60, (exp, est)
    # one job would have to do all 100 x 2 x 144k = 28.8 M image-iterations: that is what the split is for
    single = budget.attack_job_estimate(params, "deit_s", "supervised", "gpu", jobs=1)
    assert single.iterations * single.chunk_images >= 100 * 2 * 144000
