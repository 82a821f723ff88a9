"""Fine-tuning and linear probing of pretrained encoders (MAE recipe; docs/FIDELITY.md rows 61-64).

Both are supervised runs of the shared engine (vitpe.train.supervised) on a ``protocol`` run made by
``vitpe.runs.encoder_run``; this module holds what differs from training from scratch:

- loading the encoder: every encoder key must match (the official code loads non-strictly and only
  tolerates a missing head / fc_norm); the sin-cos pos_embed of the pretraining grid is resized
  bicubically to the fine-tune grid and stays learnable (docs/FIDELITY.md row 61; ``pe_resize: sincos``
  recomputes it);
- fine-tuning: global pooling (mean patch token + fc_norm, the final norm dropped), head
  trunc-normal(2e-5), AdamW with MAE's layer-wise lr decay (timm's ``layer_decay`` with the
  backbone's ``group_matcher``);
- linear probing: BatchNorm1d without affine (eps 1e-6) before the head, head trunc-normal(0.01),
  every other parameter frozen, LARS (vitpe.train.optim.build_lars).
"""
from __future__ import annotations

from pathlib import Path

import torch
from timm.layers import trunc_normal_
from torch import nn

from vitpe.errors import CheckpointError
from vitpe.models.irpe import RPE_KINDS
from vitpe.models.pos_embed import resize_pos_embed, sincos_2d_table
from vitpe.models.vit import VisionTransformer
from vitpe.models.weights import load_timm_state_dict, to_timm_state_dict
from vitpe.runs import SupervisedRun
from vitpe.models.weights import read_metadata, read_weights

PE_RESIZE = ("bicubic", "sincos")


def add_probe_head(model: VisionTransformer) -> None:
    """MAE linear probing: head = Sequential(BatchNorm1d(D, affine=False, eps=1e-6), Linear)."""
    model.head = nn.Sequential(nn.BatchNorm1d(model.embed_dim, affine=False, eps=1e-6), model.head)


def _resized_pos_embed(table: torch.Tensor, grid: int, how: str) -> torch.Tensor:
    if how == "sincos":  # possible because the pretraining PE is the fixed sin-cos table
        return sincos_2d_table(grid, table.shape[-1]).unsqueeze(0)
    return resize_pos_embed(table, (grid, grid))  # MAE's interpolate_pos_embed


def load_encoder(model: VisionTransformer, path: Path, pe_resize: str = "bicubic") -> int:
    """Load a pretraining ``encoder.safetensors`` into a classifier; return the number of keys loaded.

    Allowed to differ: the head (and fc_norm) the encoder lacks, and the final norm that global
    pooling drops. Anything else missing, extra or misshapen raises CheckpointError naming the keys.
    """
    if pe_resize not in PE_RESIZE:
        raise CheckpointError(f"unknown pe_resize {pe_resize!r} (known: {', '.join(PE_RESIZE)})")
    state = read_weights(path)
    meta = read_metadata(path)
    if "head.weight" in state:  # its head would be silently replaced by the new one: not the protocol's start
        raise CheckpointError(f"{path}: a classifier (it has a head: head.weight), not a pretraining encoder; "
                              "expected the encoder.safetensors a pretraining run writes")
    want_rpe = RPE_KINDS[model.rpe.lookup] if model.rpe is not None else None
    if "rpe" in meta and meta["rpe"] != want_rpe:
        raise CheckpointError(f"{path}: pretrained with rpe {meta['rpe']!r}, but this model uses {want_rpe!r} "
                              "(fine-tune with the iRPE variant that matches pretraining, "
                              "docs/FIDELITY.md row 57)")
    if "pos_embed" in state:
        state["pos_embed"] = _resized_pos_embed(state["pos_embed"], model.grid_size, pe_resize)
    own = to_timm_state_dict(model)
    if model.global_pool:
        state = {k: v for k, v in state.items() if not k.startswith("norm.")}
    fresh = {k: v for k, v in own.items() if k.startswith(("head.", "fc_norm."))}
    load_timm_state_dict(model, {**state, **fresh}, source=str(path))
    return len(state)


def prepare_from_pretrained(model: VisionTransformer, run: SupervisedRun) -> None:
    """Load ``run.pretrained`` and initialise the head (and freeze the encoder) as the protocol says."""
    load_encoder(model, Path(run.pretrained), run.recipe.pe_resize)
    linear = model.head[1] if run.protocol == "linprobe" else model.head
    trunc_normal_(linear.weight, std=run.recipe.head_init_std)
    nn.init.zeros_(linear.bias)
    if run.protocol == "linprobe":
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith("head.")

