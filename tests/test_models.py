"""ViT backbone: timm key compatibility, identical logits, PE values, wrong-architecture errors."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer as TimmViT

from conftest import ROOT
from vitpe.config import apply_overrides, load_params
from vitpe.runs import supervised_run
from vitpe.errors import CheckpointError
from vitpe.models import build_vit, sincos_2d_table, to_timm_state_dict
from vitpe.models.pos_embed import build_pos_embed
from vitpe.models.weights import load_weights, save_weights
from vitpe.train.supervised import build_model

MICRO = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)


def _timm_twin(pos_embed: str, num_classes: int = 5) -> TimmViT:
    return TimmViT(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0,
                   num_classes=num_classes, pos_embed="none" if pos_embed == "none" else "learn")


@pytest.mark.parametrize("pos_embed", ["learnable", "sincos", "none"])
def test_saved_weights_load_strictly_into_timm_with_identical_logits(tmp_path, pos_embed):
    torch.manual_seed(0)
    model = build_vit(MICRO, 5, pos_embed, drop_path=0.0).eval()
    save_weights(model, tmp_path / "model.safetensors", {"note": "test"})
    state = load_file(str(tmp_path / "model.safetensors"))
    assert ("pos_embed" in state) == (pos_embed != "none")
    assert state["patch_embed.proj.weight"].shape == (32, 3, 4, 4)
    twin = _timm_twin(pos_embed).eval()
    twin.load_state_dict(state, strict=True)
    reloaded = build_vit(MICRO, 5, pos_embed, drop_path=0.0).eval()
    load_weights(reloaded, tmp_path / "model.safetensors")
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        logits = model(x)
        assert torch.equal(logits, twin(x))
        assert torch.equal(logits, reloaded(x))


@pytest.mark.paper_size
def test_paper_vit_s_matches_timm_vit_small_patch16_224():
    run = supervised_run(apply_overrides(load_params(ROOT / "params.yaml"), ["scale=paper"]), "deit_s")
    torch.manual_seed(0)
    model = build_vit(run.model, 10, run.pos_embed, drop_path=0.0).eval()
    state = to_timm_state_dict(model)
    assert state["pos_embed"].shape == (1, 197, 384) and state["cls_token"].shape == (1, 1, 384)
    assert sum(v.numel() for v in state.values()) == 21_669_514  # ViT-S/16 with a 10-class head
    reference = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=10).eval()
    reference.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def _mae_get_2d_sincos_pos_embed(embed_dim: int, grid_size: int) -> np.ndarray:
    """MAE's util/pos_embed.py (numpy, float64), the oracle for our table; CLS row prepended."""
    def one_d(dim, pos):
        omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
        omega = 1.0 / 10000 ** omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid = np.meshgrid(np.arange(grid_size, dtype=np.float64), np.arange(grid_size, dtype=np.float64))
    grid = np.stack(grid, axis=0).reshape([2, 1, grid_size, grid_size])
    emb = np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1)
    return np.concatenate([np.zeros([1, embed_dim]), emb], axis=0)


def test_sincos_table_values_follow_mae_layout():
    table = sincos_2d_table(grid_size=4, dim=8)  # 4 frequencies per half: omega = [1, 1/100]
    assert table.shape == (17, 8) and table.dtype == torch.float32
    assert torch.equal(table[0], torch.zeros(8))  # CLS
    row, col = 1, 2
    token = table[1 + row * 4 + col]
    expected = [np.sin(col), np.sin(col / 100), np.cos(col), np.cos(col / 100),
                np.sin(row), np.sin(row / 100), np.cos(row), np.cos(row / 100)]
    np.testing.assert_allclose(token.numpy(), expected, rtol=0, atol=1e-7)
    # the origin patch: sin 0 = 0, cos 0 = 1 in both halves
    assert table[1].tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
    np.testing.assert_allclose(sincos_2d_table(14, 384).numpy(), _mae_get_2d_sincos_pos_embed(384, 14),
                               rtol=0, atol=1e-7)


def test_sincos_is_a_fixed_buffer_and_learnable_is_trained():
    fixed = build_vit(MICRO, 5, "sincos", drop_path=0.0)
    assert "pe.table" not in dict(fixed.named_parameters()) and "pe.table" in fixed.state_dict()
    learned = build_vit(MICRO, 5, "learnable", drop_path=0.0)
    table = dict(learned.named_parameters())["pe.table"]
    assert table.shape == (1, 17, 32) and 0.005 < table.std().item() < 0.03  # trunc-normal(0.02)
    assert learned.no_weight_decay() == {"cls_token", "pe.table"}


def test_learnable_pe_init_default_is_deits_and_normal_draws_what_mjps_table_draws():
    """The default consumes the RNG exactly as before ``init`` existed (trunc-normal(0.02) on a zero table);
    each init draws the same table as MJP's PE with that init under one seed (the ablation swaps only it)."""
    def table(kind: str, **options: str) -> torch.Tensor:
        torch.manual_seed(0)
        return build_pos_embed(kind, 4, 32, **options).table.detach()

    torch.manual_seed(0)
    deit = torch.nn.init.trunc_normal_(torch.zeros(1, 17, 32), std=0.02)
    assert torch.equal(table("learnable"), deit)
    assert torch.equal(table("learnable", init="trunc_normal"), table("learnable"))
    assert torch.equal(table("learnable", init="trunc_normal"), table("mjp", init="trunc_normal"))
    assert torch.equal(table("learnable", init="normal"), table("mjp", init="normal"))
    assert torch.equal(table("learnable", init="normal"), table("mjp"))  # MJP's default: N(0, 1)


@pytest.mark.parametrize("name, std", [("deit_s", 0.02), ("deit_s_normal_init", 1.0), ("mjp", 1.0),
                                       ("mjp_deit_init", 0.02)])
def test_pe_init_ablation_models_start_from_the_intended_table(name, std):
    run = supervised_run(load_params(ROOT / "params.yaml"), name)
    torch.manual_seed(0)
    model = build_model(run)
    rows = torch.cat([model.pe.table[0]] + ([model.pe.unk[0]] if run.pos_embed == "mjp" else []))
    assert rows.shape[0] == 1 + run.model.num_patches + (run.pos_embed == "mjp")
    assert abs(rows.std().item() / std - 1) < 0.05 and abs(rows.mean().item()) < 0.05 * std
    assert abs(rows).max().item() > 3 * std  # a full normal (trunc-normal's cut at ±2 is ~100 sigma away)


def test_position_embeddings_without_mask_support_reject_a_mask():
    model = build_vit(MICRO, 5, "learnable", drop_path=0.0)
    tokens = torch.randn(1, 17, MICRO["embed_dim"])
    with pytest.raises(ValueError, match="does not take a per-token mask"):
        model.pe(tokens, torch.zeros(1, 16, dtype=torch.bool))


def test_init_matches_official_recipe():
    torch.manual_seed(0)
    model = build_vit(dict(MICRO, embed_dim=64, depth=4), 100, "learnable", drop_path=0.0)
    head = model.head.weight
    assert torch.equal(model.head.bias, torch.zeros(100))
    # timm's trunc_normal_ cuts at absolute +-2, i.e. effectively N(0, 0.02), as in the official code
    assert 0.018 < head.std().item() < 0.022 and abs(head.mean().item()) < 0.002
    assert torch.equal(model.blocks[0].attn.qkv.bias, torch.zeros(192))  # qkv bias on, zero-init
    assert model.norm.eps == 1e-6


def test_wrong_architecture_raises_checkpoint_error_naming_keys(tmp_path):
    path = tmp_path / "model.safetensors"
    save_weights(build_vit(MICRO, 5, "learnable", drop_path=0.0), path)
    shallower = build_vit(dict(MICRO, depth=1), 5, "learnable", drop_path=0.0)
    with pytest.raises(CheckpointError, match=r"unexpected keys: blocks\.1\."):
        load_weights(shallower, path)
    wider_head = build_vit(MICRO, 7, "learnable", drop_path=0.0)
    with pytest.raises(CheckpointError, match=r"head\.bias \(5,\) vs model \(7,\)"):
        load_weights(wider_head, path)
    no_pe = build_vit(MICRO, 5, "none", drop_path=0.0)
    with pytest.raises(CheckpointError, match="unexpected keys: pos_embed"):
        load_weights(no_pe, path)
    with pytest.raises(CheckpointError, match="not found"):
        load_weights(no_pe, tmp_path / "absent.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_weights(no_pe, tmp_path / "junk.safetensors")
