"""Gradient-inversion attacks and privacy metrics: closed forms on micro models, objectives, metrics
against hand-computed values (docs/FIDELITY.md rows 38-49)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vitpe.attacks import metrics as M
from vitpe.attacks.april import april_closed_form
from vitpe.attacks.april_adaptive import april_adaptive
from vitpe.attacks.gradvit import NO_PRIOR, load_image_prior, patch_prior
from vitpe.attacks.inverting_gradients import cosine_distance, make_scheduler, step_milestones, total_variation
from vitpe.attacks.threat import (ThreatModel, client_update, detect_unknown_rows, prepare_model,
                                  recover_labels)
from vitpe.mjp.dal import attach_dal
from vitpe.mjp.jigsaw import Jigsaw
from vitpe.models import build_vit


def _model(embed_dim: int, pos_embed: str = "learnable", first_block: str = "april", img: int = 16,
           dal: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = dict(img_size=img, patch_size=4, embed_dim=embed_dim, depth=2, num_heads=2, mlp_ratio=2.0)
    model = build_vit(cfg, 10, pos_embed, 0.0, first_block=first_block)
    if dal:
        attach_dal(model, "nonlinear")
    return prepare_model(model).double()  # float64 end to end, as breaching's closed-form solve


def _image(img: int = 16) -> torch.Tensor:
    return (torch.rand(1, 3, img, img, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1)


def _to01(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1) / 2).clamp(0, 1)


@pytest.mark.parametrize("embed_dim", [48, 64])  # 48 = 3·P², the smallest width with an exact inversion
def test_april_recovers_a_random_image_exactly(embed_dim):
    model, x = _model(embed_dim), _image()
    update = client_update(model, x, torch.tensor([3]), "plain", ThreatModel(), 4, seed=0)
    result = april_closed_form(model, update)
    assert float(M.psnr(_to01(result.images), _to01(x))[0]) > 60
    assert result.info["pe_grad_rank"] == 16  # one unknown token per patch (CLS known, white box)
    # breaching's formulation (all 1 + N tokens unknown) is exact too
    assert float(M.psnr(_to01(april_closed_form(model, update, known_cls=False).images), _to01(x))[0]) > 60


def test_april_needs_the_april_block():
    model, x = _model(64, first_block="standard"), _image()
    update = client_update(model, x, torch.tensor([3]), "plain", ThreatModel(), 4, seed=0)
    assert float(M.psnr(_to01(april_closed_form(model, update).images), _to01(x))[0]) < 15
    assert "norm1.weight" not in dict(_model(64).blocks[0].named_parameters())


def _mjp_update(selected: list[int]):
    """An MJP client step (unknown PE + DAL loss) shuffling ``selected`` positions of a 4x4 grid."""
    model, x = _model(64, pos_embed="mjp", dal=True), _image()
    order = torch.arange(16)
    order[selected] = torch.tensor(selected[1:] + selected[:1])  # a cyclic shift among the selected
    unk = torch.zeros(16, dtype=torch.bool)
    unk[selected] = True
    jigsaw = Jigsaw(order=order[None], unk=unk[None])
    return model, client_update(model, x, torch.tensor([3]), "shuffled", ThreatModel(), 4, seed=0, dal_weight=0.01,
                                jigsaw=jigsaw)


def test_mjp_unknown_pe_defeats_april_and_the_adaptive_attack_recovers_kept_patches():
    selected = [5, 6, 9, 10]  # a 2x2 block, as MJP's block mask selects
    model, update = _mjp_update(selected)
    assert update.dal_weight == 0.01
    truth = _to01(update.fed)  # scored against what the client fed (the shuffled image)
    detected = detect_unknown_rows(update, model)
    assert detected.nonzero().flatten().tolist() == selected  # the zero rows of the PE gradient

    naive = april_closed_form(model, update)
    kept, moved = M.split_patch_psnr(_to01(naive.images), truth, 4, update.shuffled)
    assert kept.item() < 15 and moved.item() < 15  # garbage everywhere, kept patches included

    adaptive = april_adaptive(model, update)
    a_kept, a_moved = M.split_patch_psnr(_to01(adaptive.images), truth, 4, update.shuffled)
    assert adaptive.recovered.tolist() == (~update.shuffled).tolist()
    assert adaptive.info == {"detected_shuffled": 4, "used_unk_row": True}
    assert a_kept.item() > 20 and a_kept.item() > kept.item() + 10
    assert a_moved.item() < a_kept.item() - 5  # the shuffled positions stay unrecovered


def test_adaptive_attack_is_exact_with_one_unknown_position():
    # one position on the unknown row: its token gradient is the unknown row's gradient exactly
    model, update = _mjp_update([6])
    kept, _ = M.split_patch_psnr(_to01(april_adaptive(model, update).images), _to01(update.fed), 4, update.shuffled)
    assert kept.item() > 60


def test_cosine_objective_and_tv():
    grads = [torch.randn(3, 4), torch.randn(5)]
    assert abs(float(cosine_distance(grads, grads))) < 1e-6
    assert float(cosine_distance(grads, [-g for g in grads])) == pytest.approx(2.0)
    assert float(cosine_distance([torch.tensor([1.0, 0.0])], [torch.tensor([0.0, 2.0])])) == pytest.approx(1.0)
    x = torch.tensor([[[[0.0, 1.0], [3.0, 3.0]]]])  # |dx| = 1, 0; |dy| = 3, 2
    assert float(total_variation(x)) == pytest.approx(0.5 + 2.5)


def test_step_lr_milestones_floor_as_breaching():
    """breaching's MultiStepLR milestones are max_iterations // 2.667, // 1.6, // 1.142 (float floor)."""
    assert step_milestones(24000) == [8998, 14999, 21015]  # int(24000 / 1.6) would give 15000
    assert step_milestones(16) == [5, 9, 14] and step_milestones(50) == [18, 31, 43]
    for iterations in range(1, 5001):
        assert step_milestones(iterations) == [iterations // 2.667, iterations // 1.6, iterations // 1.142]
    # the learning rates step for step, against breaching's scheduler built with its float milestones
    ours = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=0.1)
    theirs = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = make_scheduler(ours, "step-lr", 16)
    ref = torch.optim.lr_scheduler.MultiStepLR(theirs, milestones=[16 // 2.667, 16 // 1.6, 16 // 1.142], gamma=0.1)
    lrs = []
    for _ in range(16):
        lrs.append((ours.param_groups[0]["lr"], theirs.param_groups[0]["lr"]))
        ours.step(), theirs.step(), sched.step(), ref.step()
    assert [a for a, _ in lrs] == [b for _, b in lrs]
    assert lrs[8][0] == pytest.approx(0.01) and lrs[9][0] == pytest.approx(0.001)  # the drop at 9, not 10


def test_label_recovery_from_the_bias_gradient():
    assert recover_labels(torch.tensor([0.2, -0.9, 0.4, 0.3]), 1).tolist() == [1]
    # two samples of class 2 and one of class 0: the most negative class repeats
    assert recover_labels(torch.tensor([-0.3, 0.2, -0.6, 0.1, 0.6]), 3).tolist() == [0, 2, 2]


def test_image_metrics_match_hand_computed_values():
    target = torch.full((1, 3, 16, 16), 0.1, dtype=torch.float64)
    recon = torch.zeros_like(target)
    assert float(M.mse(recon, target)[0]) == pytest.approx(0.01)
    assert float(M.psnr(recon, target)[0]) == pytest.approx(20.0)
    assert float(M.psnr(target, target)[0]) == M.PSNR_CAP  # MSE 0 -> the cap, not inf
    # constant images: variances and covariance vanish, SSIM = (2ab + C1) / (a² + b² + C1)
    a, b, c1 = 0.2, 0.4, 0.01 ** 2
    value = M.ssim(torch.full_like(target, a), torch.full_like(target, b))
    assert float(value[0]) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-6)
    # FFT2D: spectra [1, 1] and [1, -1] are orthogonal; [2, 0] vs [1, 1] have cosine 1/sqrt(2)
    one = lambda *v: torch.tensor(v, dtype=torch.float64).reshape(1, 1, 1, -1)  # noqa: E731
    assert float(M.fft2d_distance(one(1, 0), one(0, 1))[0]) == pytest.approx(1.0)
    assert float(M.fft2d_distance(one(1, 1), one(1, 0))[0]) == pytest.approx(1 - 1 / math.sqrt(2))
    assert float(M.fft2d_distance(one(1, 2), one(-2, -4))[0]) == pytest.approx(0.0, abs=1e-12)


def test_patch_metrics_match_hand_computed_values():
    values = torch.tensor([0.1, 0.3, 0.5, 0.7], dtype=torch.float64)  # a 2x2 grid of 2x2 constant patches
    truth = values.reshape(1, 1, 2, 1, 2, 1).expand(1, 3, 2, 2, 2, 2).reshape(1, 3, 4, 4)
    swapped = values[[1, 0, 2, 3]].reshape(1, 1, 2, 1, 2, 1).expand(1, 3, 2, 2, 2, 2).reshape(1, 3, 4, 4)
    kept, moved = M.split_patch_psnr(swapped, truth, 2, torch.tensor([True, True, False, False]))
    assert kept.item() == M.PSNR_CAP and moved.item() == pytest.approx(-10 * math.log10(0.2 ** 2))
    rec = M.position_recovery(swapped, truth, 2)
    assert rec["pos_acc"] == [0.5] and rec["pos_disp"] == [0.5] and rec["perm_psnr"] == [M.PSNR_CAP]
    order = M.match_order(torch.stack([truth[0] * 0, truth[0]]), torch.stack([truth[0], truth[0] * 0]))
    assert torch.equal(order[0], truth[0])


def test_missing_optional_weights_are_recorded_not_fatal(tmp_path):
    lpips = M.Lpips(str(tmp_path / "alexnet-owt-7be5be79.pth"))
    assert lpips.status == "skipped" and "not found" in lpips.reason and lpips.net is None
    assert M.Lpips(None).status == "skipped"
    prior, status, reason = load_image_prior(str(tmp_path / "moco_v2_r50.pth"))
    assert prior is None and status == "skipped" and "moco_v2_r50.pth" in reason
    assert load_image_prior(None)[:2] == (None, "none") and NO_PRIOR == "GradViT w/o image prior"


def test_image_prior_and_lpips_load_from_configured_files(tmp_path):
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "cnn.pth")
    prior, status, _ = load_image_prior(str(tmp_path / "cnn.pth"), "resnet18")
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    value = prior(x)
    assert status == "used" and value.item() > 0 and torch.autograd.grad(value, x)[0].abs().sum() > 0
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), tmp_path / "alexnet.pth")
    lpips = M.Lpips(str(tmp_path / "alexnet.pth"))
    img = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    scores = lpips(img, img.flip(0))
    assert lpips.status == "used" and scores.shape == (2,) and torch.all(lpips(img, img) < 1e-6)


def test_patch_prior_is_zero_for_piecewise_constant_patches_with_equal_borders():
    x = torch.ones(1, 3, 8, 8)
    assert float(patch_prior(x, 4)) == 0.0
    x[..., :, 4:] = 3.0  # one vertical border with a jump of 2: mean squared jump 4
    assert float(patch_prior(x, 4)) == pytest.approx(4.0)


def test_aggregates_and_paired_differences():
    import pandas as pd

    table = pd.DataFrame({"attack": ["ig"] * 3, "mode": ["plain"] * 3, "image": list("abc"),
                          "psnr": [10.0, 30.0, 20.0]})
    agg = M.aggregate(table, ["psnr"], success_psnr=15.0)
    assert agg["ig_plain_psnr_mean"] == 20.0 and agg["ig_plain_psnr_median"] == 20.0
    assert agg["ig_plain_psnr_std"] == 10.0 and agg["ig_plain_success_rate"] == pytest.approx(2 / 3)
    stats = M.paired_difference(np.array([3.0, 5.0, 7.0]), np.array([1.0, 2.0, 3.0]))
    assert (stats["n"], stats["mean"], stats["median"], stats["std"]) == (3, 3.0, 3.0, 1.0)
    assert 2.0 <= stats["ci_low"] <= stats["ci_high"] <= 4.0
    assert stats["wilcoxon_p"] == pytest.approx(0.25)  # exact two-sided, n = 3, all positive
    other = table.assign(psnr=[9.0, 27.0, 20.0])
    pairs = M.paired_comparison({"x": table, "y": other}, [("x", "y")])
    assert pairs["x_vs_y_ig_plain_psnr_diff_mean"] == pytest.approx(4 / 3)


class _Planted:
    """Unpickling this would call print: what a planted weights file could run."""

    def __reduce__(self):
        return (print, ("ran",))


@pytest.mark.parametrize("which", ["prior", "lpips"])
def test_optional_weights_that_pickle_code_are_refused_in_one_line(tmp_path, which):
    from vitpe.errors import CheckpointError

    path = tmp_path / "weights.pth"
    torch.save({"features.0.weight": _Planted()}, path)
    with pytest.raises(CheckpointError, match="refused without running them") as err:
        load_image_prior(str(path), "resnet18") if which == "prior" else M.Lpips(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)
