"""Registers the transfer pieces with mmdetection (``custom_imports`` target of the COCO config)."""
from __future__ import annotations

from mmdet.registry import MODELS
from timm.layers import LayerNorm2d

from vitpe.transfer import hooks, live, optim  # noqa: F401  (register VitpeCheckpointHook, VitpeLiveBackend,
#                                                  VitpeLayerDecayConstructor)
from vitpe.transfer.backbones import ViTDetBackbone
from vitpe.transfer.mask_paste import OutsideSafeFCNMaskHead
from vitpe.transfer.simple_fpn import SimpleFeaturePyramid

for name, module in (("VitpeViTDet", ViTDetBackbone), ("VitpeSimpleFPN", SimpleFeaturePyramid),
                     # channel LayerNorm for the ViTDet heads' ConvModules (norm_cfg=dict(type="LN2d"))
                     ("LN2d", LayerNorm2d), ("VitpeFCNMaskHead", OutsideSafeFCNMaskHead)):
    if name not in MODELS.module_dict:
        MODELS.register_module(name=name, module=module)
