"""MAE and MAE+ (with the AdPE adversaries) around the project's ViT encoder.

- ``mae`` (MAE code, models_mae.py): the asymmetric design. The encoder sees the visible tokens only
  (int(L·0.25) of L plus CLS); the decoder appends its own mask tokens, unshuffles and adds its PE.
- ``mae_plus`` (docs/FIDELITY.md row 50): the full-sequence encoder. Masked positions hold an encoder-width
  mask token (or AdPE's δ), the fixed sin-cos PE is added everywhere, all 1 + L tokens pass the
  encoder, and the decoder inserts no mask tokens. The RPE variants use iRPE in every encoder and
  decoder block on top of the sin-cos PE (docs/FIDELITY.md row 60).

Both: fixed 2D sin-cos PEs (MAE's channel layout, CLS row zero) in encoder and decoder, a
Linear(D → Dd) decoder embedding, decoder blocks, LayerNorm, Linear(Dd → p²·3), and the per-patch
normalised pixel loss on removed patches. The encoder is a ``VisionTransformer`` (no head), so its
weights save with timm key names (``encoder_state_dict``).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict

import torch
from timm.layers import LayerNorm
from timm.models.vision_transformer import Block
from torch import nn

from vitpe.mae.adpe import ADV_NAME, AbsoluteAdversary
from vitpe.mae.settings import DecoderConfig  # noqa: F401 (re-exported)
from vitpe.mae.masking import masked_patch_loss, patchify, random_mask
from vitpe.models.irpe import RPEBlock, RPEConfig, RPEContext
from vitpe.models.pos_embed import sincos_2d_table
from vitpe.models.vit import ViTSpec, VisionTransformer, forward_blocks, init_linears_and_norms
from vitpe.models.weights import to_timm_state_dict

METHODS = ("mae", "mae_plus")


class MaskedAutoencoder(nn.Module):
    def __init__(self, model_cfg: ViTSpec | Mapping, decoder: DecoderConfig, *, method: str = "mae",
                 mask_ratio: float = 0.75, norm_pix_loss: bool = True, rpe: RPEConfig | None = None,
                 adversary: str | None = None) -> None:
        """``model_cfg``: the encoder (params ``model`` keys; img_size = the pretraining crop size).

        ``adversary``: AdPE's APE mode (``embedding`` | ``coordinate``; MAE+ only). RPE adversaries
        come with ``rpe`` (its ``adversary`` field) and sit in every encoder and decoder block.
        """
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown pretraining method {method!r} (known: {', '.join(METHODS)})")
        if method == "mae" and (rpe is not None or adversary is not None):
            raise ValueError("MAE's asymmetric encoder takes neither iRPE nor an AdPE adversary (use mae_plus)")
        if adversary is not None and rpe is not None and rpe.adversary is not None:
            raise ValueError("one adversary per model: absolute (adversary) or relative (rpe.adversary)")
        self.method = method
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        spec = ViTSpec.of(model_cfg)
        self.patch_size = spec.patch_size
        self.encoder = VisionTransformer(**asdict(spec), num_classes=0, pos_embed="sincos", rpe=rpe)
        dim, grid = spec.embed_dim, self.encoder.grid_size
        self.num_patches = grid * grid
        self.adversary = AbsoluteAdversary(adversary, dim, grid) if adversary else None
        # MAE+'s encoder-width mask token; in APE embedding mode δ takes its place (AdPE model/ad_ape.py)
        needs_token = method == "mae_plus" and adversary != "embedding"
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim)) if needs_token else None

        dd = decoder.embed_dim
        self.decoder_embed = nn.Linear(dim, dd)
        self.decoder_mask_token = nn.Parameter(torch.zeros(1, 1, dd)) if method == "mae" else None
        self.register_buffer("decoder_pos_embed", sincos_2d_table(grid, dd).unsqueeze(0))
        if rpe is None:
            blocks = [Block(dd, decoder.num_heads, decoder.mlp_ratio, qkv_bias=True, norm_layer=LayerNorm)
                      for _ in range(decoder.depth)]
        else:
            blocks = [RPEBlock(dd, decoder.num_heads, decoder.mlp_ratio, rpe) for _ in range(decoder.depth)]
        self.decoder_blocks = nn.ModuleList(blocks)
        self.decoder_rpe = rpe is not None
        self.decoder_norm = LayerNorm(dd)
        self.decoder_pred = nn.Linear(dd, self.patch_size ** 2 * 3)
        self.grad_checkpointing = False
        self._init_weights()

    def _init_weights(self) -> None:
        # Official MAE init (models_mae.py): xavier-uniform Linear and flattened patch conv, zero
        # biases, LayerNorm 1/0, CLS and mask tokens N(0, 0.02); iRPE tables stay zero.
        init_linears_and_norms(self, nn.init.xavier_uniform_)
        proj = self.encoder.patch_embed.proj
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        for token in (self.encoder.cls_token, self.mask_token, self.decoder_mask_token):
            if token is not None:
                nn.init.normal_(token, std=0.02)

    # --- encoder -----------------------------------------------------------------------------

    def _cls(self, batch: int) -> torch.Tensor:
        enc = self.encoder
        return (enc.cls_token + enc.pe.table[:, :1]).expand(batch, -1, -1)

    def encode_visible(self, images: torch.Tensor, noise: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """MAE: (tokens [B, 1 + len_keep, D], mask [B, L], restore [B, L])."""
        enc = self.encoder
        x = enc.patch_embed(images) + enc.pe.table[:, 1:]
        m = random_mask(x.shape[0], x.shape[1], self.mask_ratio, x.device, noise)
        x = torch.gather(x, 1, m.keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([self._cls(x.shape[0]), x], dim=1)
        return enc.norm(enc.run_blocks(x)), m.mask, m.restore

    def encode_full(self, images: torch.Tensor, noise: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """MAE+: (tokens [B, 1 + L, D], mask [B, L]); masked inputs are mask token (or δ) + PE."""
        enc = self.encoder
        x = enc.patch_embed(images)
        mask = random_mask(x.shape[0], x.shape[1], self.mask_ratio, x.device, noise).mask
        m = mask.unsqueeze(-1)
        fill = self.adversary.adv_delta if self.adversary and self.adversary.mode == "embedding" else self.mask_token
        x = torch.where(m, fill.to(x.dtype), x)
        pe = enc.pe.table[:, 1:]
        if self.adversary is not None and self.adversary.mode == "coordinate":
            pe = torch.where(m, self.adversary.shifted_pos_embed(pe.dtype), pe)
        x = torch.cat([self._cls(x.shape[0]), x + pe], dim=1)
        return enc.norm(enc.run_blocks(x, query_mask=self._query_mask(mask))), mask

    @staticmethod
    def _query_mask(mask: torch.Tensor) -> torch.Tensor:
        return torch.cat([mask.new_zeros(mask.shape[0], 1), mask], dim=1)

    # --- decoder and loss --------------------------------------------------------------------

    def decode(self, tokens: torch.Tensor, mask: torch.Tensor, restore: torch.Tensor | None = None) -> torch.Tensor:
        """Pixel predictions [B, L, p²·3] for every patch (CLS dropped)."""
        x = self.decoder_embed(tokens)
        if restore is not None:  # MAE: append mask tokens, unshuffle to the original order
            fill = self.decoder_mask_token.expand(x.shape[0], restore.shape[1] + 1 - x.shape[1], -1)
            patches = torch.cat([x[:, 1:], fill.to(x.dtype)], dim=1)
            patches = torch.gather(patches, 1, restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
            x = torch.cat([x[:, :1], patches], dim=1)
        x = x + self.decoder_pos_embed
        ctx = None
        if self.decoder_rpe:
            grid = self.encoder.grid_size
            ctx = RPEContext((grid, grid), has_cls=True, query_mask=self._query_mask(mask))
        x = forward_blocks(self.decoder_blocks, x, ctx, self.grad_checkpointing)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def forward(self, images: torch.Tensor, noise: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, predictions [B, L, p²·3], mask [B, L]); ``noise`` [B, L] fixes the masks."""
        if self.method == "mae":
            tokens, mask, restore = self.encode_visible(images, noise)
            pred = self.decode(tokens, mask, restore)
        else:
            tokens, mask = self.encode_full(images, noise)
            pred = self.decode(tokens, mask)
        target = patchify(images, self.patch_size)
        return masked_patch_loss(pred.float(), target.float(), mask, self.norm_pix_loss), pred, mask

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of the encoder and decoder blocks (vitpe.models.vit.forward_blocks)."""
        self.grad_checkpointing = enable
        self.encoder.set_grad_checkpointing(enable)

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder alone with timm key names, without AdPE's δs (not part of the encoder)."""
        return {k: v for k, v in to_timm_state_dict(self.encoder).items() if not k.endswith(ADV_NAME)}
