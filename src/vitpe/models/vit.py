"""The shared ViT backbone: timm's patch embedding and transformer blocks around a pluggable PE.

Matches timm's ``VisionTransformer`` with ``class_token=True, global_pool='token'`` (DeiT/ViT-S as in
the official MJP code, models/vit_timm.py): pre-norm blocks, LayerNorm eps 1e-6, GELU, qkv bias,
head = Linear on the final-norm CLS token. It is composed here rather than subclassed so the PE is a
separate module (``self.pe``) that methods swap or drive with a per-token mask.

Parameter names equal timm's except the PE table, ``pe.table`` here and ``pos_embed`` in timm; the
two helpers at the bottom convert, so saved weights load into a plain timm ViT with strict=True.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from timm.layers import LayerNorm, PatchEmbed, trunc_normal_
from timm.models import checkpoint
from timm.models.vision_transformer import Block
from torch import nn

from vitpe.errors import CheckpointError
from vitpe.mjp.dal import DenseLocalization
from vitpe.mjp.jigsaw import Jigsaw, permute_pixels_in_patches, permute_tokens
from vitpe.models.april_block import apply_first_block
from vitpe.models.irpe import RPEBlock, RPEConfig, RPEContext
from vitpe.models.pos_embed import PositionEmbedding, build_pos_embed, grid_size_of

MODEL_KEYS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")


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
        dal_head: str | None = None,
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
        # MJP's side head on the PE table (initialises itself); saved under ``dal.*``
        self.dal = DenseLocalization(embed_dim, grid, dal_head) if dal_head else None

    def _init_weights(self) -> None:
        # Official MJP/DeiT init (MJP code, models/vit_timm.py): trunc-normal 0.02 on every Linear, head
        # included (not zero-initialised), zero biases, CLS trunc-normal 0.02; the patch conv keeps
        # PyTorch's default and the PE component initialises itself.
        trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

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

    def embed(self, x: torch.Tensor, jigsaw: Jigsaw | None = None) -> torch.Tensor:
        """Patch-embed (shuffled by ``jigsaw``), prepend CLS, add the PE: [B, 3, H, W] -> [B, 1 + N, D].

        A jigsaw's mask reaches only PEs that use one (MJP's unknown row); any other PE simply stays
        with the slot a shuffled patch moved into, as in the official code.
        """
        if jigsaw is not None and jigsaw.pixel_order is not None:
            x = permute_pixels_in_patches(x, jigsaw.pixel_order, self.patch_size)
        x = self.patch_embed(x)
        if jigsaw is not None:
            x = permute_tokens(x, jigsaw.order)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.pe(x, self.unknown_positions(jigsaw))

    def unknown_positions(self, jigsaw: Jigsaw | None) -> torch.Tensor | None:
        """[rows, N] bool: the positions served by the PE's unknown row under ``jigsaw``; None when
        this PE has no such row (official: ``unk_mask`` exists only with ``--use-unk-pos``)."""
        return jigsaw.unk if jigsaw is not None and self.pe.takes_mask else None

    def forward_features(self, x: torch.Tensor, jigsaw: Jigsaw | None = None) -> torch.Tensor:
        return self.norm(self.run_blocks(self.embed(x, jigsaw)))

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """The image feature the head sees: CLS, or the fc-normed mean patch token (global pool)."""
        if self.global_pool:
            return self.fc_norm(tokens[:, 1:].mean(dim=1))
        return tokens[:, 0]

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(tokens))

    def forward(self, x: torch.Tensor, jigsaw: Jigsaw | None = None,
                with_dal: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits [B, num_classes]; with ``with_dal`` also the DAL loss (inside forward, so DDP sees it).

        DAL regresses the positions that keep their own PE row: with MJP's unknown row all but the
        shuffled ones, with any other PE every position, shuffled or not (official keep-mask
        ``1 - unk_mask``, all ones without it; docs/FIDELITY.md row 16).
        """
        logits = self.forward_head(self.forward_features(x, jigsaw))
        if not with_dal:
            return logits
        if self.dal is None:
            raise ValueError("this model has no DAL head (build it with dal_head=...)")
        unknown = self.unknown_positions(jigsaw)
        return logits, self.dal(self.pe.table[0, 1:], None if unknown is None else ~unknown)


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


def build_vit(model_cfg: Mapping, num_classes: int, pos_embed: str, drop_path: float,
              pe_options: Mapping | None = None, dal_head: str | None = None,
              rpe: RPEConfig | None = None, global_pool: bool = False,
              first_block: str = "standard") -> VisionTransformer:
    """The backbone described by a params.yaml ``model`` block (``pe_options``: MJP's unk PE)."""
    missing = [k for k in MODEL_KEYS if k not in model_cfg]
    if missing:
        raise ValueError(f"model config lacks {', '.join(missing)}")
    cfg = {k: model_cfg[k] for k in MODEL_KEYS}
    pe = build_pos_embed(pos_embed, grid_size_of(cfg["img_size"], cfg["patch_size"]), cfg["embed_dim"],
                         **dict(pe_options or {}))
    return VisionTransformer(**cfg, num_classes=num_classes, pos_embed=pe, drop_path=drop_path, dal_head=dal_head,
                             rpe=rpe, global_pool=global_pool, first_block=first_block)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DistributedDataParallel (or similar ``.module``) wrapper."""
    return getattr(model, "module", model)


def _to_timm_key(key: str) -> str:
    if key == "pe.table":
        return "pos_embed"
    if key.startswith("pe."):  # extra PE state (e.g. MJP's unknown row) keeps a pos_embed_ prefix
        return "pos_embed_" + key[3:]
    return key


def _from_timm_key(key: str) -> str:
    if key == "pos_embed":
        return "pe.table"
    if key.startswith("pos_embed_"):
        return "pe." + key[len("pos_embed_"):]
    return key


def to_timm_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state with timm's key names, as contiguous CPU tensors (ready for safetensors)."""
    return {_to_timm_key(k): v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}


def _listing(items: Iterable[str], limit: int = 6) -> str:
    items = sorted(items)
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def key_problems(state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], *,
                 unused: Iterable[str] = (), new: Iterable[str] = (), target: str = "model") -> list[str]:
    """What keeps ``state`` (checkpoint keys) from loading into ``expected`` (keys -> shapes).

    ``unused``: checkpoint keys the target ignores by design; ``new``: target keys no checkpoint
    provides by design. Every other missing, unexpected or misshapen key is named; [] means it fits.
    """
    missing = set(expected) - set(state) - set(new)
    unexpected = set(state) - set(expected) - set(unused)
    mismatched = [f"{k} {tuple(state[k].shape)} vs {target} {tuple(expected[k])}"
                  for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k])]
    return [f"{what}: {_listing(keys)}" for what, keys in
            (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)) if keys]


def load_timm_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load timm-named weights; raise CheckpointError naming every missing/unexpected/misshapen key."""
    model = unwrap(model)
    problems = key_problems(state, {_to_timm_key(k): v.shape for k, v in model.state_dict().items()})
    if problems:
        raise CheckpointError(f"{source} does not fit this architecture; " + "; ".join(problems))
    model.load_state_dict({_from_timm_key(k): v for k, v in state.items()}, strict=True)
