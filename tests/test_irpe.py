"""iRPE: piecewise buckets at hand-computed offsets, the contextual term, the adversaries' (no-)effects."""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from conftest import CUDA
from vitpe.models import build_vit
from vitpe.models.irpe import (
    CLS_BUCKET,
    ContextualProductRPE,
    RPEAttention,
    RPEConfig,
    RPEContext,
    bucket_ids,
    piecewise_index,
)

MICRO = dict(img_size=12, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)


def test_piecewise_index_matches_the_formula_at_hand_computed_offsets():
    # |x| <= 1.9: x; else sign(x) * min(round(1.9 + ln(|x|/1.9) / ln(8) * 1.9), 3.8) truncated
    # e.g. x = 3: 1.9 + ln(1.579)/2.079*1.9 = 2.317 -> 2; x = 4: 2.580 -> 3; x = 13: 3.657 -> 4 -> 3
    offsets = torch.tensor([0, 1, -1, 2, 3, 4, 5, 6, 7, 13, -3, -4, -13])
    expected = torch.tensor([0, 1, -1, 2, 2, 3, 3, 3, 3, 3, -2, -3, -3])
    assert torch.equal(piecewise_index(offsets).long(), expected)
    x = 3.0
    assert piecewise_index(torch.tensor([x]), rounded=False).item() == pytest.approx(
        1.9 + math.log(x / 1.9) / math.log(15.2 / 1.9) * 1.9, abs=1e-6)


def test_product_bucket_ids_with_cls():
    ids = bucket_ids((3, 3), has_cls=True)
    assert ids.shape == (10, 10)
    assert (ids[0] == CLS_BUCKET).all() and (ids[:, 0] == CLS_BUCKET).all()
    # query (0, 0) = token 1, key (2, 1) = token 1 + 7: offset (-2, -1) -> (1, 2) shifted -> 1 * 7 + 2
    assert ids[1, 1 + 7] == 9
    assert ids[1, 1] == 3 * 7 + 3  # zero offset: the centre bucket
    assert ids.max() < CLS_BUCKET + 1


def test_discrete_term_is_q_dot_table_column_of_the_bucket():
    torch.manual_seed(0)
    rpe = ContextualProductRPE(4, RPEConfig())
    with torch.no_grad():
        rpe.lookup_table_weight.normal_()
    q = torch.randn(1, 2, 10, 4)
    term = rpe(q, RPEContext((3, 3)))
    ids = bucket_ids((3, 3))
    i, j = 2, 7
    assert torch.allclose(term[0, 1, i, j], q[0, 1, i] @ rpe.lookup_table_weight[0, :, ids[i, j]])


def _model_with_rpe(config: RPEConfig) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_vit(MICRO, 0, "sincos", 0.0, rpe=config)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.rpe_k.lookup_table_weight.normal_(std=0.5)
            if hasattr(block.attn.rpe_k, "adv_delta"):
                block.attn.rpe_k.adv_delta.normal_(std=2.0)
    return model


def _delta_to_table_gradient_ratio(config: RPEConfig) -> float:
    """‖∂L/∂δ‖ / ‖∂L/∂table‖ summed over the blocks, for four masked query rows."""
    model = _model_with_rpe(config)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[:, 3:7] = True
    model.run_blocks(model.embed(torch.randn(2, 3, 12, 12)), query_mask=mask).square().mean().backward()
    delta = sum(float(b.attn.rpe_k.adv_delta.grad.norm()) for b in model.blocks)
    return delta / sum(float(b.attn.rpe_k.lookup_table_weight.grad.norm()) for b in model.blocks)


def test_rpe_embedding_adversary_is_a_no_op_but_per_bucket_is_not():
    """docs/FIDELITY.md row 56: one delta for all buckets shifts each softmax row by a constant."""
    assert _delta_to_table_gradient_ratio(RPEConfig(adversary="embedding")) < 1e-5
    assert _delta_to_table_gradient_ratio(RPEConfig(adversary="embedding_per_bucket")) > 0.1


def test_interpolated_rpe_corrected_equals_discrete_on_integer_offsets_within_alpha():
    """On a 2x2 grid every offset is in {-1, 0, 1}: bucket centres, where the corrected sampler is exact."""
    torch.manual_seed(1)
    discrete = ContextualProductRPE(4, RPEConfig())
    interp = ContextualProductRPE(4, RPEConfig(lookup="interp", interp_variant="corrected"))
    faithful = ContextualProductRPE(4, RPEConfig(lookup="interp"))
    with torch.no_grad():
        discrete.lookup_table_weight.normal_()
        interp.lookup_table_weight.copy_(discrete.lookup_table_weight)
        faithful.lookup_table_weight.copy_(discrete.lookup_table_weight)
    q = torch.randn(1, 1, 5, 4)
    ctx = RPEContext((2, 2))
    assert torch.allclose(interp(q, ctx), discrete(q, ctx), atol=1e-5)
    # the official parametrisation (÷ 3.8, swapped axes, unaligned corners) differs (docs/FIDELITY.md row 57)
    assert not torch.allclose(faithful(q, ctx), discrete(q, ctx), atol=1e-3)


def test_rpe_coordinate_adversary_changes_only_masked_query_rows_and_is_differentiable():
    torch.manual_seed(2)
    rpe = ContextualProductRPE(4, RPEConfig(lookup="interp", adversary="coordinate"))
    with torch.no_grad():
        rpe.lookup_table_weight.normal_()
    q = torch.randn(1, 1, 10, 4)
    mask = torch.zeros(1, 10, dtype=torch.bool)
    mask[0, 4] = True
    clean = rpe(q, RPEContext((3, 3), query_mask=mask)).detach()
    with torch.no_grad():
        rpe.adv_delta.copy_(torch.tensor([0.5, -0.3]))
    shifted = rpe(q, RPEContext((3, 3), query_mask=mask))
    changed = (shifted - clean).abs().sum(dim=-1)[0, 0]
    assert changed[4] > 1e-3 and torch.all(changed[torch.arange(10) != 4] == 0)
    shifted.sum().backward()
    assert rpe.adv_delta.grad.abs().sum() > 0


def test_rpe_encoder_keys_match_timm_names_plus_the_tables():
    model = build_vit(MICRO, 0, "sincos", 0.0, rpe=RPEConfig())
    names = set(model.state_dict())
    assert "blocks.0.attn.rpe_k.lookup_table_weight" in names and "blocks.0.attn.qkv.weight" in names
    assert model.blocks[0].attn.rpe_k.lookup_table_weight.shape == (1, 16, 50)


# --- which SDPA kernel the iRPE attention runs on ----------------------------------------------------

MATH_KERNEL = "aten::_scaled_dot_product_attention_math"


def _rpe_attention(lookup: str, adversary: str | None, device: str) -> tuple[RPEAttention, torch.Tensor, RPEContext]:
    """A ViT-B-headed (head_dim 64) iRPE attention at the paper's 14 x 14 grid + CLS (197 tokens: a bias
    whose last dimension is not a multiple of 8), with non-zero tables, δ and masked query rows."""
    torch.manual_seed(0)
    attn = RPEAttention(128, 2, RPEConfig(lookup=lookup, adversary=adversary)).to(device)
    with torch.no_grad():
        attn.rpe_k.lookup_table_weight.normal_()
        if adversary == "coordinate":
            attn.rpe_k.adv_delta.copy_(torch.tensor([0.4, -0.7]))
    mask = torch.rand(2, 197, device=device) < 0.75
    mask[:, 0] = False  # CLS
    return attn, torch.randn(2, 197, 128, device=device), RPEContext((14, 14), query_mask=mask)


def _sdpa_kernels(run) -> set[str]:
    """The ATen SDPA kernels ``run()`` dispatches to (the profiler's op names)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run()
    return {e.key for e in prof.key_averages() if e.key.startswith("aten::_scaled_dot_product_")
            and e.key != "aten::_scaled_dot_product_attention"}


@pytest.mark.parametrize("lookup, adversary", [("discrete", None), ("interp", "coordinate")])
def test_rpe_attention_infers_on_the_fused_cpu_kernel_with_the_math_kernels_result(lookup, adversary):
    """Without gradients the bias is a constant mask, which the CPU's flash kernel takes. (Training
    needs the bias's gradient, which no CPU kernel but the math one returns.)"""
    attn, x, ctx = _rpe_attention(lookup, adversary, "cpu")
    attn.eval()
    with torch.no_grad():
        kernels = _sdpa_kernels(lambda: attn(x, ctx))
        fused = attn(x, ctx)
        with sdpa_kernel(SDPBackend.MATH):
            math_out = attn(x, ctx)
    assert kernels == {"aten::_scaled_dot_product_flash_attention_for_cpu"}
    torch.testing.assert_close(fused, math_out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("lookup, adversary", [("discrete", None), ("interp", "coordinate")])
@pytest.mark.parametrize("device", [CUDA])
def test_rpe_attention_trains_on_a_fused_cuda_kernel_with_the_math_kernels_gradients(device, lookup, adversary,
                                                                                       dtype, tol):
    """CUDA's fused kernels return the bias's gradient: SDPA's default dispatch leaves the math kernel,
    and the output and every parameter gradient (tables, δ, qkv) agree with the math kernel's."""
    attn, x, ctx = _rpe_attention(lookup, adversary, device)

    def step() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        attn.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
            out = attn(x, ctx)
        out.float().square().mean().backward()
        return out.detach().float(), {n: p.grad.clone() for n, p in attn.named_parameters()}

    kernels = _sdpa_kernels(step)
    fused_out, fused_grads = step()
    with sdpa_kernel(SDPBackend.MATH):
        math_out, math_grads = step()
    assert kernels and MATH_KERNEL not in kernels, kernels

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm() / b.norm().clamp_min(1e-12))

    assert rel(fused_out, math_out) < tol
    for name, grad in math_grads.items():
        assert grad.abs().sum() > 0 and rel(fused_grads[name], grad) < tol, name
