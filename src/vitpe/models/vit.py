"""The shared ViT backbone: timm's patch embedding and transformer blocks around a pluggable PE.

Matches timm's ``VisionTransformer`` with ``class_token=True, global_pool='token'`` (DeiT/ViT-S as in
the official MJP code, models/vit_timm.py): pre-norm blocks, LayerNorm eps 1e-6, GELU, qkv bias,
head = Linear on the final-norm CLS token. It is composed here rather than subclassed so the PE is a
separate module (``self.pe``), and its forward is offered in public pieces (patch tokens, CLS + PE
with an optional per-token PE mask, blocks, head) from which methods compose their own passes (MJP's
shuffled forward: vitpe.mjp.forward).

Parameter names equal timm's except the PE table, ``pe.table`` here and ``pos_embed`` in timm
(vitpe.models.weights converts, so saved weights load into a plain timm ViT with strict=True).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict

import torch
from timm.layers import LayerNorm, PatchEmbed, trunc_normal_
from timm.models import checkpoint
from timm.models.vision_transformer import Block
from torch import nn

from vitpe.models.april_block import apply_first_block
from vitpe.models.irpe import RPEBlock, RPEConfig, RPEContext
from vitpe.models.pos_embed import PositionEmbedding, build_pos_embed
from vitpe.models.spec import MODEL_KEYS, ViTSpec, grid_size_of  # noqa: F401 (MODEL_KEYS re-exported)





class VisionTransformer(nn.Module):
    def __init__(
        self,
        *,
        img_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        num_classes: int,
        pos_embed: str | PositionEmbedding = "learnable",
        drop_path: float = 0.0,
        rpe: RPEConfig | None = None,
        global_pool: bool = False,
        first_block: str = "standard",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.rpe = rpe
        self.global_pool = global_pool
        self.grad_checkpointing = False
        grid = grid_size_of(img_size, patch_size)
        self.grid_size = grid
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=3, embed_dim=embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pe = build_pos_embed(pos_embed, grid, embed_dim) if isinstance(pos_embed, str) else pos_embed
        # stochastic depth grows linearly with depth, as in timm/DeiT (on the CPU also when the model is
        # built on the meta device, as vitpe.train.memory does to count parameters)
        rates = torch.linspace(0, drop_path, depth, device="cpu").tolist()
        if rpe is None:
            blocks = [Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=rate,
                            norm_layer=LayerNorm, act_layer=nn.GELU) for rate in rates]
        else:  # iRPE in every block (AdPE's RPE variants)
            blocks = [RPEBlock(embed_dim, num_heads, mlp_ratio, rpe, drop_path=rate) for rate in rates]
        self.blocks = nn.ModuleList(blocks)
        apply_first_block(self.blocks, first_block)  # "april": no norm1/residual (docs/FIDELITY.md row 39)
        # MAE fine-tuning pools the patch tokens and normalises them (fc_norm) instead of the last norm
        self.norm = nn.Identity() if global_pool else LayerNorm(embed_dim)
        self.fc_norm = LayerNorm(embed_dim) if global_pool else None
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        # Official MJP/DeiT init (MJP code, models/vit_timm.py): trunc-normal 0.02 on every Linear, head
        # included (not zero-initialised), zero biases, CLS trunc-normal 0.02; the patch conv keeps
        # PyTorch's default and the PE component initialises itself.
        trunc_normal_(self.cls_token, std=0.02)
        init_linears_and_norms(self, lambda weight: trunc_normal_(weight, std=0.02))

    def no_weight_decay(self) -> set[str]:
        """Parameter names timm's optimizer factory excludes from weight decay (besides 1-D ones)."""
        return {"cls_token"} | {f"pe.{name}" for name in self.pe.no_weight_decay}

    def group_matcher(self, coarse: bool = False) -> dict:
        """Layer ids for timm's layer-wise lr decay, as MAE's lr_decay.py assigns them: CLS, PE and
        patch embedding 0, block i i + 1, everything after the blocks (norms, head) the top layer."""
        # timm reads the ordinal (99999,) as "merge with the previous group": use another one
        return {"stem": r"^cls_token|^pe\.|^patch_embed",
                "blocks": [(r"^blocks\.(\d+)", None), (r"^norm|^fc_norm|^head", (10**6,))]}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of the blocks (timm's method name): each block keeps only its
        input and recomputes its activations in the backward; the results are unchanged."""
        self.grad_checkpointing = enable

    def run_blocks(self, x: torch.Tensor, query_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The transformer blocks over [B, 1 + N, D]; ``query_mask`` reaches RPE adversaries only."""
        ctx = None
        if self.rpe is not None:
            ctx = RPEContext((self.grid_size, self.grid_size), has_cls=True, query_mask=query_mask)
        return forward_blocks(self.blocks, x, ctx, self.grad_checkpointing)

    def patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, N, D] patch embeddings, row-major (no CLS, no PE)."""
        return self.patch_embed(images)

    def add_cls_and_pe(self, tokens: torch.Tensor, pe_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Prepend CLS and add the PE: [B, N, D] -> [B, 1 + N, D]. ``pe_mask`` ([rows, N] bool) reaches
        the PE, which rejects it unless it takes one (``takes_mask``)."""
        x = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return self.pe(x, pe_mask)

    def embed(self, images: torch.Tensor, pe_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Patch-embed, prepend CLS, add the PE: [B, 3, H, W] -> [B, 1 + N, D]."""
        return self.add_cls_and_pe(self.patch_tokens(images), pe_mask)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode(self.embed(images))

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """The blocks and the final norm over embedded tokens [B, 1 + N, D]."""
        return self.norm(self.run_blocks(tokens))

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """The image feature the head sees: CLS, or the fc-normed mean patch token (global pool)."""
        if self.global_pool:
            return self.fc_norm(tokens[:, 1:].mean(dim=1))
        return tokens[:, 0]

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(tokens))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits [B, num_classes]."""
        return self.forward_head(self.forward_features(images))


def init_linears_and_norms(root: nn.Module, init_weight: Callable[[torch.Tensor], object]) -> None:
    """``init_weight`` on every Linear weight (module order) with zero biases, and LayerNorm 1 / 0: the
    part the official ViT (DeiT) and MAE initialisations share; they differ in ``init_weight``."""
    for module in root.modules():
        if isinstance(module, nn.Linear):
            init_weight(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def forward_blocks(blocks: Iterable[nn.Module], x: torch.Tensor, ctx: RPEContext | None = None,
                   checkpointed: bool = False) -> torch.Tensor:
    """Run ``blocks`` in order (RPE blocks also get ``ctx``). ``checkpointed``: under autograd each
    block runs through timm's non-reentrant ``checkpoint``, which restores the RNG state for the
    recomputation (same DropPath draws), so losses and gradients equal the plain forward's."""
    args = () if ctx is None else (ctx,)
    checkpointed = checkpointed and torch.is_grad_enabled()
    for block in blocks:
        x = checkpoint(block, x, *args, use_reentrant=False) if checkpointed else block(x, *args)
    return x


def build_vit(model_cfg: ViTSpec | Mapping, num_classes: int, pos_embed: str, drop_path: float,
              pe_options: Mapping | None = None, rpe: RPEConfig | None = None, global_pool: bool = False,
              first_block: str = "standard") -> VisionTransformer:
    """The backbone of a ViTSpec or a params.yaml ``model`` block (``pe_options``: its PE's options)."""
    spec = ViTSpec.of(model_cfg)
    pe = build_pos_embed(pos_embed, spec.grid_size, spec.embed_dim, **dict(pe_options or {}))
    return VisionTransformer(**asdict(spec), num_classes=num_classes, pos_embed=pe, drop_path=drop_path, rpe=rpe,
                             global_pool=global_pool, first_block=first_block)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DistributedDataParallel (or similar ``.module``) wrapper."""
    return getattr(model, "module", model)
