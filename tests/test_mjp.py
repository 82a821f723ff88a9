"""MJP: block sampler statistics vs the official generator, jigsaw application, unknown PE, DAL, training."""
from __future__ import annotations

import copy
import dataclasses
import random

import numpy as np
import pytest
import torch

from conftest import MICRO_MODEL, ROOT, NUM_CLASSES, log_records, make_image_folder, micro_run, micro_params
from vitpe.config import load_params, validate_params
from vitpe.mjp.settings import DALSettings, JigsawSettings, UnknownPESettings
from vitpe.runs import supervised_run
from vitpe.errors import ConfigError
from vitpe.mjp.block_mask import sample_block_mask, target_count
from vitpe.mjp.dal import attach_dal, dal_weight
from vitpe.mjp.forward import ShuffledForward, embed_shuffled
from vitpe.mjp.jigsaw import draw_jigsaw, permute_tokens, shuffle_pixels
from vitpe.models import build_vit
from vitpe.train.optim import build_optimizer, weight_decay_of
from vitpe.train.supervised import train_supervised

MJP_METHOD = {"jigsaw": {"mode": "mjp", "ratio": 0.25, "apply_prob": 0.5, "start_epoch": 1, "per_sample": False},
              "dal": {"head": "nonlinear", "weight": 0.01, "final_ratio": 0.5},
              "unk": {"init": "normal", "weight_decay": True}}


# --- block sampler --------------------------------------------------------------------------------

# (ratio, N, mean count, P(count = N)): this sampler over 200,000 draws (docs/FIDELITY.md row 10), then
# the official MaskingGenerator over 2,000 draws (mean, P), as measured with the MJP code.
SAMPLER_STATISTICS = [(0.1, 19, 18.606, 0.691, 18.63, 0.70), (0.5, 98, 97.784, 0.826, 97.78, 0.82)]


@pytest.mark.parametrize("ratio, goal, mean, p_exact, official_mean, official_p", SAMPLER_STATISTICS)
def test_block_sampler_matches_the_official_generator_statistics(ratio, goal, mean, p_exact, official_mean,
                                                                 official_p):
    draws = 20000
    rng = random.Random(0)
    counts = np.array([sample_block_mask(14, ratio, rng).sum() for _ in range(draws)])
    exact = counts == goal
    assert target_count(196, ratio) == goal
    # never above N; a first block can be 6 cells (area 8 rounded to 2 x 3), but more blocks follow
    assert counts.max() == goal and counts.min() >= 8
    sem, sep = counts.std() / np.sqrt(draws), np.sqrt(p_exact * (1 - p_exact) / draws)
    assert abs(counts.mean() - mean) < 4 * sem and abs(exact.mean() - p_exact) < 4 * sep
    # the official 2,000-draw measurement lies within its own sampling error of this sampler's values
    assert abs(official_mean - mean) < 3 * counts.std() / np.sqrt(2000)
    assert abs(official_p - p_exact) < 3 * np.sqrt(p_exact * (1 - p_exact) / 2000)


def test_block_sampler_is_deterministic_for_a_seed():
    first = [sample_block_mask(14, 0.3, random.Random(5)) for _ in range(3)]
    again = [sample_block_mask(14, 0.3, random.Random(5)) for _ in range(3)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(sample_block_mask(14, 0.3, random.Random(5)), sample_block_mask(14, 0.3, random.Random(6)))


# --- jigsaw ---------------------------------------------------------------------------------------

def test_mjp_jigsaw_permutes_only_the_selected_positions():
    jig = draw_jigsaw("mjp", 14, rows=3, ratio=0.3, py_rng=random.Random(0), np_rng=np.random.default_rng(0))
    assert jig.order.shape == jig.unk.shape == (3, 196) and jig.pixel_order is None
    for order, unk in zip(jig.order.numpy(), jig.unk.numpy()):
        assert sorted(order) == list(range(196))
        kept = np.flatnonzero(~unk)
        assert np.array_equal(order[kept], kept)  # kept patches stay put
        assert set(order[unk]) == set(np.flatnonzero(unk))  # shuffled among the selected positions
        assert 8 <= unk.sum() <= 58
    assert not torch.equal(jig.unk[0], jig.unk[1])  # per-sample draws differ


@pytest.mark.parametrize("mode", ["mjp", "patches", "pixels"])
def test_token_shuffle_equals_pixel_shuffle_before_the_patch_embedding(mode):
    torch.manual_seed(0)
    model = build_vit(MICRO_MODEL, 5, "learnable", drop_path=0.0)
    images = torch.randn(2, 3, 16, 16)
    jig = draw_jigsaw(mode, 4, rows=2, ratio=0.5, patch_size=4, py_rng=random.Random(1),
                      np_rng=np.random.default_rng(1))
    via_tokens = embed_shuffled(model, images, jig)[:, 1:]
    via_pixels = model.embed(shuffle_pixels(images, jig, 4))[:, 1:]
    torch.testing.assert_close(via_tokens, via_pixels)
    if mode != "mjp":
        assert jig.unk is None and (jig.order != torch.arange(16)).any()
    if mode == "pixels":  # one pixel permutation shared by every patch
        shuffled = shuffle_pixels(images, dataclasses.replace(jig, order=torch.arange(16)[None]), 4)
        assert torch.equal(shuffled[0, 0, :4, :4].flatten(), images[0, 0, :4, :4].flatten()[jig.pixel_order])
        assert torch.equal(shuffled[1, 2, 8:12, 4:8].flatten(), images[1, 2, 8:12, 4:8].flatten()[jig.pixel_order])


def test_permute_tokens_broadcasts_one_order_over_the_batch():
    tokens = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    out = permute_tokens(tokens, torch.tensor([[3, 2, 1, 0]]))
    assert out[:, :, 0].tolist() == [[3, 2, 1, 0], [7, 6, 5, 4]]


# --- unknown position embedding -----------------------------------------------------------------

def test_unknown_pe_replaces_shuffled_positions_only():
    torch.manual_seed(0)
    model = build_vit(MICRO_MODEL, 5, "mjp", drop_path=0.0)
    pe = model.pe
    tokens = torch.zeros(2, 17, 32)
    mask = torch.zeros(1, 16, dtype=torch.bool)
    mask[0, [3, 7]] = True
    out = pe(tokens, mask)
    assert torch.equal(out[:, 0], pe.table[0, 0].expand(2, -1))  # CLS keeps row 0
    for pos in range(16):
        expected = pe.unk[0, 0] if pos in (3, 7) else pe.table[0, 1 + pos]
        assert torch.equal(out[0, 1 + pos], expected) and torch.equal(out[1, 1 + pos], expected)
    # the shuffled positions' own rows get no gradient: they never reach the model (MJP's privacy claim)
    out.sum().backward()
    assert pe.table.grad[0, 4].abs().sum() == 0 and pe.table.grad[0, 8].abs().sum() == 0
    assert pe.table.grad[0, 1].abs().sum() > 0 and pe.unk.grad.abs().sum() > 0


def test_unknown_pe_init_and_weight_decay_options():
    torch.manual_seed(0)
    faithful = build_vit(MICRO_MODEL, 5, "mjp", drop_path=0.0)
    assert 0.85 < faithful.pe.table.std().item() < 1.15  # PyTorch's N(0, 1) nn.Embedding init
    decay = weight_decay_of(build_optimizer(faithful, 1e-3, 0.05), faithful)
    assert decay["pe.table"] == decay["pe.unk"] == 0.05  # official: the table escapes the skip list
    corrected = build_vit(MICRO_MODEL, 5, "mjp", 0.0, pe_options={"init": "trunc_normal", "weight_decay": False})
    assert corrected.pe.table.std().item() < 0.03
    decay = weight_decay_of(build_optimizer(corrected, 1e-3, 0.05), corrected)
    assert decay["pe.table"] == decay["pe.unk"] == 0.0


# --- DAL ------------------------------------------------------------------------------------------

def test_dal_weight_schedule_matches_the_official_values():
    lam = [dal_weight(e, 300, 20, 0.01) for e in range(300)]
    assert lam[0] == 0 and lam[10] == pytest.approx(0.01 * 10 / 19) and lam[19] == pytest.approx(0.01)
    assert lam[20] == pytest.approx(0.01)
    assert lam[160] == pytest.approx(0.005 + 0.0025 * (1 + np.cos(np.pi * 140 / 280)))
    assert lam[299] == pytest.approx(0.005, abs=1e-6) and min(lam[20:]) > 0.005


@pytest.mark.parametrize("scale", ["tiny", "paper"])
def test_each_scales_gamma_selects_about_a_tenth_of_its_grid_and_moves_patches(scale):
    """MJP's jigsaw must act at every scale: at 0.1 the tiny 4 x 4 grid selects at most one patch, which
    no permutation moves (FIDELITY row 77), so the tiny scale has its own gamma."""
    params = load_params(ROOT / "params.yaml", [f"scale={scale}"])
    model = params["scales"][scale]["model"]
    grid = model["img_size"] // model["patch_size"]
    gamma = supervised_run(params, "mjp").jigsaw.ratio
    py_rng, np_rng = random.Random(0), np.random.default_rng(0)
    draws = [draw_jigsaw("mjp", grid, ratio=gamma, py_rng=py_rng, np_rng=np_rng) for _ in range(2000)]
    selected = np.mean([jig.unk.sum().item() for jig in draws]) / grid ** 2
    moved = np.mean([(jig.order[0] != torch.arange(grid ** 2)).any().item() for jig in draws])
    assert 0.08 < selected < 0.11, selected  # 224 px at the released 0.1: 18.6 of 196 (9.5 %)
    assert moved > 0.3, moved
    if scale == "tiny":  # the released gamma on this grid: nothing ever moves
        assert not any((draw_jigsaw("mjp", grid, ratio=0.1, py_rng=py_rng, np_rng=np_rng).order[0]
                        != torch.arange(grid ** 2)).any() for _ in range(500))


@pytest.mark.parametrize("pos_embed", ["mjp", "learnable"])
def test_dal_regresses_raw_grid_coordinates_of_the_positions_with_their_own_pe_row(pos_embed):
    """Official keep-mask: 1 - unk_mask with MJP's unknown row; all ones without it, even when the
    input is shuffled (a DAL-only ablation regresses every position)."""
    torch.manual_seed(0)
    model = build_vit(MICRO_MODEL, 5, pos_embed, 0.0)
    attach_dal(model, "nonlinear")
    images = torch.randn(2, 3, 16, 16)
    jig = draw_jigsaw("mjp", 4, ratio=0.75, py_rng=random.Random(0), np_rng=np.random.default_rng(0))
    kept = ~jig.unk[0]
    assert kept.sum() == 4  # 12 of the 16 positions shuffled
    _, loss = ShuffledForward(model)(images, jig, with_dal=True)
    error = (model.dal.mlp(model.pe.table[0, 1:]) - torch.tensor(
        [[r, c] for r in range(4) for c in range(4)], dtype=torch.float32)).abs()
    expected = error[kept].mean() if pos_embed == "mjp" else error.mean()
    torch.testing.assert_close(loss, expected)
    assert loss.item() > 1.0  # raw coordinates in [0, 3], untrained head: far from them
    assert abs(error[kept].mean().item() - error.mean().item()) > 1e-3  # the two rules differ here


def test_mjp_config_defaults_and_errors():
    params = micro_params()
    run = supervised_run(params, "mjp")
    assert run.jigsaw == JigsawSettings(mode="mjp", ratio=0.15, apply_prob=0.5, start_epoch=1, per_sample=False)
    assert params["scales"]["tiny"]["mjp_gamma"] == 0.15  # the ratio mjp leaves unset: the scale's gamma
    assert run.dal == DALSettings(head="nonlinear", weight=0.01, final_ratio=0.5)
    assert run.unk == UnknownPESettings(init="normal", weight_decay=True)
    assert supervised_run(params, "naive_shuffle").unk is None
    bad = copy.deepcopy(params)
    bad["supervised"]["deit_s"]["dal"] = {}
    bad["supervised"]["deit_s"]["pos_embed"] = "sincos"
    with pytest.raises(ConfigError, match=r"supervised\.deit_s\.dal"):
        supervised_run(bad, "deit_s")
    bad = copy.deepcopy(params)
    bad["supervised"]["mjp"]["jigsaw"]["mode"] = "blocks"
    with pytest.raises(ConfigError, match=r"supervised\.mjp\.jigsaw\.mode"):
        validate_params(bad)


# --- training -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imagefolder"))


@pytest.mark.parametrize("per_sample", [False, True], ids=["per-batch", "per-sample"])
def test_mjp_training_resumes_bitwise_and_shuffles_about_half_the_steps_after_warmup(
        data_root, tmp_path, monkeypatch, per_sample):
    import vitpe.mjp.training as mjp_training

    draws = []
    real_draw = mjp_training.draw_jigsaw
    monkeypatch.setattr(mjp_training, "draw_jigsaw", lambda *a, **k: draws.append(a[2]) or real_draw(*a, **k))
    method = copy.deepcopy(MJP_METHOD)
    method["jigsaw"]["per_sample"] = per_sample
    run = dataclasses.replace(micro_run(data_root), pos_embed="mjp", jigsaw=JigsawSettings(**method["jigsaw"]),
                              dal=DALSettings(**method["dal"]), unk=UnknownPESettings(**method["unk"]))
    train_supervised(run, tmp_path / "whole", device="cpu")  # 3 epochs x 5 steps, warm-up 1 epoch
    assert 0 < len(draws) < 10 and set(draws) == {4 if per_sample else 1}  # rows: batch of 4, or shared
    train_supervised(run, tmp_path / "split", device="cpu", max_steps=7)
    train_supervised(run, tmp_path / "split", device="cpu")
    assert (tmp_path / "whole/model.safetensors").read_bytes() == (tmp_path / "split/model.safetensors").read_bytes()
    assert log_records(tmp_path / "whole") == log_records(tmp_path / "split")
    from safetensors.torch import load_file

    assert {"pos_embed", "pos_embed_unk", "dal.mlp.0.weight"} <= set(load_file(tmp_path / "whole/model.safetensors"))
