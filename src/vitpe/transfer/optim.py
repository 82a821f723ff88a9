"""Layer-wise learning-rate decay for the transfer backbones, as an mmengine optimizer constructor.

mmseg's ``LayerDecayOptimizerConstructor`` only recognises backbones whose class name contains
"MAE"/"BEiT"/"ConvNeXt" and parses ``backbone.layers.N`` names; mmdet's ViTDet constructor is not in
the wheel. This one asks the backbone (``layer_id``) and follows the same rule as MAE/BEiT/ViTDet:
embeddings are layer 0, block i is layer i + 1, everything else (neck, heads) layer depth + 1, and a
parameter at layer l gets lr * rate ** (depth + 1 - l). No weight decay on 1-D parameters and biases;
the absolute PE and CLS token are decayed or not by ``decay_pos_embed`` (docs/FIDELITY.md).
"""
from __future__ import annotations

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn


@OPTIM_WRAPPER_CONSTRUCTORS.register_module(name="VitpeLayerDecayConstructor")
class LayerDecayConstructor(DefaultOptimWrapperConstructor):
    """paramwise_cfg: ``layer_decay_rate`` (float), ``decay_pos_embed`` (bool)."""

    def add_params(self, params: list[dict], module: nn.Module, **kwargs) -> None:
        rate = float(self.paramwise_cfg.get("layer_decay_rate", 1.0))
        decay_pos = bool(self.paramwise_cfg.get("decay_pos_embed", False))
        backbone = module.backbone
        depth = backbone.depth
        pos_names = {"backbone." + n for n in backbone.pos_embed_names()}
        groups: dict[tuple[int, bool], dict] = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            layer = backbone.layer_id(name[len("backbone."):]) if name.startswith("backbone.") else depth + 1
            no_decay = param.ndim == 1 or name.endswith(".bias") or (name in pos_names and not decay_pos)
            group = groups.setdefault((layer, no_decay), {
                "params": [], "lr": self.base_lr * rate ** (depth + 1 - layer),
                "weight_decay": 0.0 if no_decay else self.base_wd,
            })
            group["params"].append(param)
        for (layer, no_decay), group in sorted(groups.items()):
            params.append(group)
        print_log(f"layer decay {rate}: {len(groups)} parameter groups over {depth + 2} layers, "
                  f"lr {min(g['lr'] for g in groups.values()):.3g} .. {max(g['lr'] for g in groups.values()):.3g}",
                  logger="current")
