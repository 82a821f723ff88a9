"""Components: the ViT backbone (vit.py) with pluggable position embeddings (pos_embed.py, registered in
registry.py), iRPE relative position encoding (irpe.py), the APRIL first block, weight I/O with timm key
names (weights.py) and torch-free architecture descriptions (spec.py).

The names below load their module on first use (PEP 562), so ``vitpe.models.spec`` and
``vitpe.models.registry`` can be read without importing torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PE_KINDS": "pos_embed", "PositionEmbedding": "pos_embed", "LearnablePosEmbed": "pos_embed",
    "SinCosPosEmbed": "pos_embed", "NoPosEmbed": "pos_embed", "build_pos_embed": "pos_embed",
    "sincos_2d_table": "pos_embed", "VisionTransformer": "vit", "build_vit": "vit", "unwrap": "vit",
    "ViTSpec": "spec", "load_timm_state_dict": "weights", "to_timm_state_dict": "weights",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vitpe.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"vitpe.models.{_EXPORTS[name]}"), name)
