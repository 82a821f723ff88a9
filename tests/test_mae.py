"""MAE, MAE+ and AdPE: PE layout, masking, loss, adversary modes, descent-ascent and projection."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer as TimmViT

from conftest import ROOT
from vitpe.config import apply_overrides, load_params
from vitpe.runs import pretrain_run
from vitpe.mae.adpe import AbsoluteAdversary, adversarial_parameters, project_
from vitpe.mae.masking import masked_patch_loss, num_visible, patchify, random_mask
from vitpe.mae.model import DecoderConfig, MaskedAutoencoder
from vitpe.train.pretrain import build_autoencoder, build_pretrain_optimizer
from vitpe.models.irpe import RPEConfig
from vitpe.models.pos_embed import sincos_2d_table
from vitpe.train.distributed import init_distributed
from vitpe.train.optim import build_scheduler

ENCODER = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)
DECODER = DecoderConfig(embed_dim=16, depth=1, num_heads=2)


def test_sincos_table_layout_and_values_at_known_positions():
    dim, grid = 16, 4
    table = sincos_2d_table(grid, dim)
    assert table.shape == (1 + grid * grid, dim) and torch.all(table[0] == 0)  # CLS row zero
    quarter = dim // 4
    omega = [1 / 10000 ** (k / quarter) for k in range(quarter)]
    row, col = 1, 2
    token = table[1 + row * grid + col]
    # MAE: first half the column (w) coordinate, [sin | cos] concatenated, then the row
    for k in range(quarter):
        assert token[k] == pytest.approx(math.sin(col * omega[k]), abs=1e-6)
        assert token[quarter + k] == pytest.approx(math.cos(col * omega[k]), abs=1e-6)
        assert token[2 * quarter + k] == pytest.approx(math.sin(row * omega[k]), abs=1e-6)
        assert token[3 * quarter + k] == pytest.approx(math.cos(row * omega[k]), abs=1e-6)
    assert table[1].tolist() == [0.0] * quarter + [1.0] * quarter + [0.0] * quarter + [1.0] * quarter


def test_coordinate_mode_zero_shift_is_the_fixed_pe_and_unit_shift_the_next_column():
    grid, dim = 4, 32
    adv = AbsoluteAdversary("coordinate", dim, grid)
    fixed = sincos_2d_table(grid, dim)[1:]
    assert torch.allclose(adv.shifted_pos_embed(), fixed, atol=1e-6)
    with torch.no_grad():
        adv.adv_delta.copy_(torch.tensor([1.0, 0.0]))  # (Δcol, Δrow) in patch units
    shifted = adv.shifted_pos_embed().reshape(grid, grid, dim)
    assert torch.allclose(shifted[:, :-1], fixed.reshape(grid, grid, dim)[:, 1:], atol=1e-5)


def test_random_mask_keeps_int_L_quarter_per_sample_and_restore_unshuffles():
    m = random_mask(3, 49, 0.75)
    assert num_visible(49, 0.75) == 12 and num_visible(196, 0.75) == 49
    assert m.mask.sum(dim=1).tolist() == [37, 37, 37]
    assert not torch.equal(m.mask[0], m.mask[1])  # independent per sample
    assert torch.all(~m.mask.gather(1, m.keep))  # the kept indices are the unmasked ones


def test_masked_patch_loss_ignores_visible_patches_and_normalises_targets():
    torch.manual_seed(0)
    pred, target = torch.randn(2, 6, 12), torch.randn(2, 6, 12)
    mask = torch.tensor([[1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0]], dtype=torch.bool)
    loss = masked_patch_loss(pred, target, mask)
    changed = pred.clone()
    changed[~mask] += 100.0
    assert masked_patch_loss(changed, target, mask) == loss
    norm = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    by_hand = ((pred - norm) ** 2).mean(-1)[mask].mean()
    assert loss == pytest.approx(float(by_hand), rel=1e-6)


def test_patchify_layout():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    patches = patchify(images, 4)
    assert patches.shape == (2, 4, 48)
    # patch 1 = row 0, col 1; entry (p=0, q=1, c=2) = image[2, 0, 5]
    assert patches[0, 1, (0 * 4 + 1) * 3 + 2] == images[0, 2, 0, 5]


def test_mae_encoder_sees_exactly_int_L_quarter_tokens_and_mae_plus_all():
    seen = {}
    for method in ("mae", "mae_plus"):
        model = MaskedAutoencoder(ENCODER, DECODER, method=method)
        model.encoder.blocks[0].register_forward_pre_hook(lambda m, args, k=method: seen.update({k: args[0].shape}))
        loss, pred, mask = model(torch.randn(2, 3, 16, 16))
        assert pred.shape == (2, 16, 48) and mask.sum().item() == 2 * 12 and loss.item() > 0
    assert seen["mae"][1] == 1 + int(16 * 0.25) and seen["mae_plus"][1] == 1 + 16


def _loss_after_one_step(mode: str, norm: str, eps: float, rpe: RPEConfig | None = None):
    torch.manual_seed(0)
    model = MaskedAutoencoder(ENCODER, DECODER, method="mae_plus", rpe=rpe,
                              adversary=None if rpe is not None else mode)
    images, noise = torch.randn(4, 3, 16, 16), torch.rand(4, 16)
    params = load_params(ROOT / "params.yaml")
    run = pretrain_run(params, "adpe_abs_embedding")
    run = dataclasses.replace(run, adversary=dataclasses.replace(run.adversary, mode=mode, norm=norm, eps=eps))
    optimizer = build_pretrain_optimizer(model, run, lr=1e-3)
    for group in optimizer.param_groups:  # ascend on δ only: the weights stay put
        group["lr"] = 0.5 if group.get("adversarial") else 0.0
    before = model(images, noise)[0]
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = model(images, noise)[0]
    return before.item(), after.item(), [p.detach() for _, p in adversarial_parameters(model)]


@pytest.mark.parametrize("mode", ["embedding", "coordinate"])
@pytest.mark.parametrize("norm, eps", [("l2", 0.3), ("linf", 0.2)])
def test_adversarial_step_raises_the_loss_for_a_fixed_mask_and_stays_in_the_ball(mode, norm, eps):
    before, after, deltas = _loss_after_one_step(mode, norm, eps)
    assert after > before  # the ascent step makes the pretext task harder
    (delta,) = deltas
    if norm == "l2":
        assert float(delta.norm()) <= eps + 1e-6
    else:
        assert float(delta.abs().max()) <= eps + 1e-6


def test_projection_waits_for_a_nonzero_adversarial_lr_as_the_official_optimizer():
    """Official adv_optimizer.py projects only groups with lr < 0: at the first warm-up step (lr 0) a δ
    that starts outside the ball stays there, unprojected; the next step ascends from it, then projects."""
    torch.manual_seed(0)
    model = MaskedAutoencoder(ENCODER, DECODER, method="mae_plus", adversary="embedding")
    run = pretrain_run(load_params(ROOT / "params.yaml"), "adpe_abs_embedding")
    run = dataclasses.replace(run, adversary=dataclasses.replace(run.adversary, norm="l2", eps=0.05))
    optimizer = build_pretrain_optimizer(model, run, lr=1e-3)
    scheduler = build_scheduler(optimizer, 10, 5, warmup_lr=0.0, min_lr=0.0, warmup_prefix=True)
    (_, delta), = adversarial_parameters(model)
    adversarial = next(g for g in optimizer.param_groups if g.get("adversarial"))
    start = delta.detach().clone()
    assert float(start.norm()) > 0.09  # N(0, 0.02²) over 32 entries: outside the 0.05 ball
    images, noise = torch.randn(2, 3, 16, 16), torch.rand(2, 16)
    after = []
    for step in range(2):
        scheduler.step_update(step)
        optimizer.zero_grad()
        model(images, noise)[0].backward()
        optimizer.step()
        after.append((adversarial["lr"], delta.detach().clone()))
    (lr0, delta0), (lr1, delta1) = after
    assert lr0 == 0.0 and lr1 > 0
    assert torch.equal(delta0, start)  # not projected at lr 0
    assert float(delta1.norm()) == pytest.approx(0.05, rel=1e-6)  # projected once the lr is non-zero


def test_projection_l2_whole_tensor_and_linf_clamp():
    d = torch.tensor([3.0, 4.0])
    project_(d, "l2", 1.0)
    assert torch.allclose(d, torch.tensor([0.6, 0.8]))
    d = torch.tensor([3.0, -0.5, -4.0])
    project_(d, "linf", 1.0)
    assert d.tolist() == [1.0, -0.5, -1.0]
    d = torch.tensor([0.1, 0.2])
    project_(d, "l2", 1.0)
    assert d.tolist() == pytest.approx([0.1, 0.2])


def test_adpe_variants_place_delta_as_the_official_code_does():
    params = load_params(ROOT / "params.yaml")
    shapes = {}
    for exp in params["pretrain"]:  # every defined variant, built by default or not
        model = build_autoencoder(pretrain_run(params, exp))
        shapes[exp] = sorted({tuple(p.shape) for _, p in adversarial_parameters(model)})
        counts = len(adversarial_parameters(model))
        if exp.startswith("adpe_rel"):  # one δ per iRPE module: every encoder and decoder block
            assert counts == len(model.encoder.blocks) + len(model.decoder_blocks)
        assert (model.mask_token is None) == (exp == "adpe_abs_embedding" or exp == "mae")
    dim, head_dim = 64, 16
    assert shapes["mae"] == [] and shapes["mae_plus_abs"] == [] and shapes["mae_plus_rel"] == []
    assert shapes["adpe_abs_embedding"] == [(1, 1, dim)] and shapes["adpe_abs_coordinate"] == [(2,)]
    assert shapes["adpe_rel_embedding"] == [(1, head_dim, 1)] and shapes["adpe_rel_coordinate"] == [(2,)]


def test_encoder_state_loads_into_a_plain_timm_vit():
    model = MaskedAutoencoder(ENCODER, DECODER, method="mae_plus", adversary="coordinate")
    state = model.encoder_state_dict()
    assert not any("adv_delta" in k for k in state) and state["pos_embed"].shape == (1, 17, 32)
    twin = TimmViT(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=0)
    twin.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        ours = model.encoder.forward_features(x)
        assert torch.allclose(ours, twin.forward_features(x), atol=1e-6)


@pytest.mark.paper_size
@pytest.mark.parametrize("exp", ["mae", "mae_plus_abs", "adpe_abs_coordinate", "adpe_rel_coordinate"])
def test_paper_scale_vit_b_builds_and_runs_one_step_on_cpu_at_batch_2(exp):
    params = apply_overrides(load_params(ROOT / "params.yaml"), ["scale=paper"])
    run = pretrain_run(params, exp)
    torch.manual_seed(0)
    model = build_autoencoder(run)
    encoder_params = sum(p.numel() for p in model.encoder.parameters())
    assert 85_000_000 < encoder_params < 87_000_000  # ViT-B/16 without a head
    assert run.model.img_size == (224 if exp == "mae" else 112)
    size, crops = run.crops.crop_size, run.crops.num_crops
    optimizer = build_pretrain_optimizer(model, run, lr=1e-4)
    loss = model(torch.randn(2 * crops, 3, size, size))[0]
    loss.backward()
    optimizer.step()
    assert math.isfinite(loss.item())
    assert init_distributed("cpu").world_size == 1
