"""The project's ViT as transfer backbones (registered with mmseg/mmdet in ``mm_seg``/``mm_det``).

- ``ViTBackbone`` (ADE20K): ``vitpe.models.vit.VisionTransformer`` without head and final norm, as
  the MAE/BEiT segmentation backbone (mmseg ``MAE``): CLS token kept, absolute PE resized to the
  task grid, BEiT's relative position bias (zero init) and layer scale (init 1.0) as mmseg's ``MAE``
  (options), or iRPE in every block for RPE encoders (the bucketed tables apply at any grid), the patch tokens of four blocks returned as [B, D, H/p, W/p] maps for mmseg's
  ``Feature2Pyramid`` (x4, x2, x1, x0.5). MAE uses blocks 4/6/8/12 of 12; other depths take the same
  fractions (1/3, 1/2, 2/3, 1) of the depth, rounded, so depth 24 gives 8/12/16/24 (BEiT/MAE-L) and
  depth 3 gives 1/2/2/3 (a block may feed two pyramid levels).
- ``ViTDetBackbone`` (COCO): ViTDet's plain backbone (Li et al. 2022; detectron2 projects/ViTDet),
  not shipped in the mmdet wheel: patch embedding + absolute PE (no CLS token), then timm's SAM/ViTDet
  blocks (``vision_transformer_sam.Block``: windowed attention with padding, optional decomposed
  relative position) with ViTDet's layout, global attention in blocks 2, 5, 8, 11 of 12 (the last
  block of each quarter at other depths) and windows elsewhere. It returns the last map only; the
  simple feature pyramid (``simple_fpn``) builds the levels. Parameter names equal timm's ViT, so the
  same encoder keys load into both backbones.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule
from timm.layers import LayerNorm, LayerScale, PatchEmbed, trunc_normal_
from timm.layers.attention import Attention
from timm.models.beit import gen_relative_position_index
from timm.models.vision_transformer_sam import Block as WindowBlock
from torch import nn

from vitpe.errors import CheckpointError, ConfigError
from vitpe.models.vit import VisionTransformer
from vitpe.models.weights import load_timm_state_dict, to_timm_state_dict
from vitpe.models.pos_embed import resize_pos_embed
from vitpe.transfer.convert import Encoder, LoadReport, check_transferable, match_state, read_encoder

MAE_OUT_FRACTIONS = (1 / 3, 1 / 2, 2 / 3, 1.0)  # blocks 4/6/8/12 of 12 (MAE/BEiT segmentation)


class RelPosBiasAttention(Attention):
    """timm's ViT attention plus BEiT's relative position bias, zero-initialised as in MAE's
    segmentation setup (mmseg ``MAEAttention``): one (2h-1)(2w-1) + 3 table per block (the 3 extra
    rows: CLS->token, token->CLS, CLS->CLS), indexed with timm's ``gen_relative_position_index`` and
    added to the attention logits. Same parameter names as timm's Attention plus the new table."""

    def __init__(self, dim: int, num_heads: int, grid: tuple[int, int]) -> None:
        super().__init__(dim, num_heads=num_heads, qkv_bias=True)
        self.grid = tuple(grid)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * grid[0] - 1) * (2 * grid[1] - 1) + 3, num_heads))
        self.register_buffer("relative_position_index", gen_relative_position_index(self.grid), persistent=False)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        n = x.shape[1]
        if n != self.relative_position_index.shape[0]:
            raise ValueError(f"relative position bias built for a {self.grid} grid (+ CLS), got {n} tokens; "
                             "use the training crop size (the sliding-window test does)")
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0).to(x.dtype)
        return super().forward(x, attn_mask=bias if attn_mask is None else bias + attn_mask, is_causal=is_causal)


def _round(x: float) -> int:
    return int(math.floor(x + 0.5))


def mae_out_indices(depth: int) -> list[int]:
    """0-based blocks feeding the four pyramid levels: [3, 5, 7, 11] at depth 12."""
    return [max(1, _round(depth * f)) - 1 for f in MAE_OUT_FRACTIONS]


def vitdet_global_blocks(depth: int) -> list[int]:
    """0-based global-attention blocks of ViTDet: [2, 5, 8, 11] at depth 12, [5, 11, 17, 23] at 24."""
    return sorted({max(1, _round(depth * k / 4)) - 1 for k in range(1, 5)})


def resolve_blocks(indices: Sequence[int] | None, depth: int, default: list[int], what: str) -> list[int]:
    """Explicit block indices (negative ones count from the end) or the depth-derived default."""
    if indices is None:
        return list(default)
    out = []
    for i in indices:
        j = i + depth if i < 0 else i
        if not 0 <= j < depth:
            raise ConfigError(f"{what}: block {i} does not exist in a {depth}-block encoder")
        out.append(j)
    return out


def _encoder(source: str | Path | Encoder) -> Encoder:
    return source if isinstance(source, Encoder) else read_encoder(source)


class ViTBackbone(BaseModule):
    """MAE-style segmentation backbone around ``VisionTransformer`` (module docstring)."""

    #: the pretraining's final LayerNorm: MAE/BEiT segmentation does not apply it (final_norm=False)
    UNUSED = ("norm.weight", "norm.bias")
    TASK = "ade20k"

    def __init__(self, *, img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int,
                 mlp_ratio: float, out_indices: Sequence[int] | None = None, drop_path: float = 0.1,
                 rpe: str | None = None, rpe_options: dict | None = None, rel_pos_bias: bool = False,
                 layer_scale: float | None = None, checkpoint: str | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg)
        from vitpe.models.irpe import rpe_config

        self.rpe_kind = rpe
        # learnable: the pretraining's fixed sin-cos table is loaded into it and fine-tuned, as mmseg's MAE
        self.vit = VisionTransformer(img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth,
                                     num_heads=num_heads, mlp_ratio=mlp_ratio, num_classes=0,
                                     pos_embed="learnable", drop_path=drop_path,
                                     rpe=rpe_config(rpe, **dict(rpe_options or {})))
        self.vit.norm = nn.Identity()
        self.vit.patch_embed.strict_img_size = False  # other input sizes get a resized PE in forward
        self.patch_size = patch_size
        self.grid = img_size // patch_size
        # mmseg's MAE backbone (the AdPE/MAE ADE20K recipe): BEiT relative position bias in every block
        # and learnable layer scale (init_values); both start as the identity and are trained anew
        for block in self.vit.blocks:
            if rel_pos_bias:
                if rpe is not None:
                    raise ConfigError("ade20k.rel_pos_bias: an iRPE encoder has its own relative position term")
                block.attn = RelPosBiasAttention(embed_dim, num_heads, (self.grid, self.grid))
            if layer_scale:
                block.ls1, block.ls2 = LayerScale(embed_dim, layer_scale), LayerScale(embed_dim, layer_scale)
        self.depth = depth
        self.out_indices = resolve_blocks(out_indices, depth, mae_out_indices(depth), "ade20k.out_blocks")
        self.checkpoint = checkpoint

    def init_weights(self) -> None:
        if self.checkpoint:
            self.load_encoder(self.checkpoint)

    def load_encoder(self, source: str | Path | Encoder) -> LoadReport:
        encoder = _encoder(source)
        check_transferable(encoder, self.TASK, rpe_supported=True)
        if encoder.rpe != self.rpe_kind:
            raise CheckpointError(f"{encoder.path}: encoder has rpe={encoder.rpe!r}, the backbone was built "
                                  f"with rpe={self.rpe_kind!r}")
        state = dict(encoder.state)
        state["pos_embed"] = resize_pos_embed(state["pos_embed"], (self.grid, self.grid))
        current = to_timm_state_dict(self.vit)
        expected = {k: tuple(v.shape) for k, v in current.items()}
        # AdPE's adversarial deltas (if an encoder carries them) belong to pretraining only
        unused = set(self.UNUSED) | {k for k in state if k.endswith(".adv_delta")}
        report = match_state(state, expected, unused=unused, new=self.new_keys(), source=str(encoder.path))
        load_timm_state_dict(self.vit, {**{k: current[k] for k in report.new}, **{k: state[k] for k in report.loaded}},
                             source=str(encoder.path))
        print_log(report.summary(str(encoder.path)), logger="current")
        return report

    def new_keys(self) -> set[str]:
        """The relative position tables and layer-scale gammas (not in pretraining encoders)."""
        return {k for k in self.vit.state_dict() if k.endswith((".relative_position_bias_table", ".gamma"))}

    def layer_id(self, name: str) -> int:
        """Layer-decay depth of a parameter (name relative to the backbone): 0 embeddings, i+1 block i."""
        name = name.removeprefix("vit.")
        if name.startswith(("cls_token", "pe.", "patch_embed.")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.depth + 1

    def pos_embed_names(self) -> set[str]:
        return {"vit.pe.table", "vit.cls_token"}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, _, h, w = x.shape
        gh, gw = h // self.patch_size, w // self.patch_size
        tokens = self.vit.patch_embed(x)
        tokens = torch.cat([self.vit.cls_token.expand(b, -1, -1), tokens], dim=1)
        tokens = tokens + resize_pos_embed(self.vit.pe.table, (gh, gw))
        ctx = None
        if self.rpe_kind is not None:
            from vitpe.models.irpe import RPEContext

            ctx = RPEContext((gh, gw), has_cls=True)
        outs = []
        for i, block in enumerate(self.vit.blocks):
            tokens = block(tokens) if ctx is None else block(tokens, ctx)
            feature = None
            for _ in range(self.out_indices.count(i)):
                if feature is None:
                    feature = tokens[:, 1:].transpose(1, 2).reshape(b, -1, gh, gw).contiguous()
                outs.append(feature)
        return tuple(outs)


class ViTDetBackbone(BaseModule):
    """ViTDet's plain ViT with windowed/global attention (module docstring)."""

    #: ViTDet runs on patch tokens only (no CLS token) and applies no final norm
    UNUSED = ("cls_token", "norm.weight", "norm.bias")
    TASK = "coco"

    def __init__(self, *, img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int,
                 mlp_ratio: float, drop_path: float = 0.1, window_size: int = 14,
                 global_blocks: Sequence[int] | None = None, use_rel_pos: bool = True,
                 checkpoint: str | None = None, init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg)
        self.patch_size = patch_size
        self.grid = img_size // patch_size
        self.depth = depth
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=3, embed_dim=embed_dim,
                                      strict_img_size=False)
        # CLS row kept (pretraining layout, as ViTDet's pretrain_use_cls_token) but not added to any token
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid * self.grid, embed_dim))
        self.global_blocks = resolve_blocks(global_blocks, depth, vitdet_global_blocks(depth), "coco.global_blocks")
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(
            WindowBlock(embed_dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=rate,
                        norm_layer=partial(LayerNorm, eps=1e-6), act_layer=nn.GELU, use_rel_pos=use_rel_pos,
                        window_size=0 if i in self.global_blocks else window_size,
                        input_size=(self.grid, self.grid))
            for i, rate in enumerate(rates)
        )
        self.checkpoint = checkpoint
        trunc_normal_(self.pos_embed, std=0.02)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def init_weights(self) -> None:
        if self.checkpoint:
            self.load_encoder(self.checkpoint)

    def new_keys(self) -> set[str]:
        """ViTDet's decomposed relative-position tables: zero-initialised, not in MAE-style encoders."""
        return {k for k in self.state_dict() if ".rel_pos_" in k}

    def load_encoder(self, source: str | Path | Encoder) -> LoadReport:
        encoder = _encoder(source)
        check_transferable(encoder, self.TASK)
        state = dict(encoder.state)
        state["pos_embed"] = resize_pos_embed(state["pos_embed"], (self.grid, self.grid))
        expected = {k: tuple(v.shape) for k, v in self.state_dict().items()}
        report = match_state(state, expected, unused=self.UNUSED, new=self.new_keys(), source=str(encoder.path))
        result = self.load_state_dict({k: state[k] for k in report.loaded}, strict=False)
        # the checks above make this an invariant; keep it loud in case the module changes
        assert not result.unexpected_keys and set(result.missing_keys) == set(report.new), result
        print_log(report.summary(str(encoder.path)), logger="current")
        return report

    def layer_id(self, name: str) -> int:
        if name.startswith(("pos_embed", "patch_embed.")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.depth + 1

    def pos_embed_names(self) -> set[str]:
        return {"pos_embed"}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        b, _, h, w = x.shape
        gh, gw = h // self.patch_size, w // self.patch_size
        tokens = self.patch_embed(x) + resize_pos_embed(self.pos_embed, (gh, gw))[:, 1:]
        x = tokens.reshape(b, gh, gw, -1)
        for block in self.blocks:
            x = block(x)
        return (x.permute(0, 3, 1, 2).contiguous(),)
