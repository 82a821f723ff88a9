"""Registers the transfer pieces with mmsegmentation (``custom_imports`` target of the ADE20K config)."""
from __future__ import annotations

from mmseg.registry import MODELS

from vitpe.transfer import hooks, live, optim  # noqa: F401  (register VitpeCheckpointHook, VitpeLiveBackend,
#                                                  VitpeLayerDecayConstructor)
from vitpe.transfer.backbones import ViTBackbone

if "VitpeViT" not in MODELS.module_dict:
    MODELS.register_module(name="VitpeViT", module=ViTBackbone)
