"""ViTDet's simple feature pyramid (Li et al. 2022, detectron2 ``SimpleFeaturePyramid``; the mmdet
wheel does not ship ``projects/ViTDet``), written here for that reason.

From the last ViT map (stride p) alone: x4 = deconv(D -> D/2), LN, GELU, deconv(D/2 -> D/4); x2 =
deconv(D -> D/2); x1 = identity; x0.5 = max-pool 2. Each level: 1x1 conv + LN, 3x3 conv + LN (convs
without bias, LN over channels), and a fifth level by stride-2 subsampling of the last one
(detectron2's ``LastLevelMaxPool``) for the RPN.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from timm.layers import LayerNorm2d
from torch import nn


def _scale_stage(dim: int, scale: float) -> tuple[nn.Module, int]:
    if scale == 4.0:
        return nn.Sequential(nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), LayerNorm2d(dim // 2), nn.GELU(),
                             nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2)), dim // 4
    if scale == 2.0:
        return nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), dim // 2
    if scale == 1.0:
        return nn.Identity(), dim
    if scale == 0.5:
        return nn.MaxPool2d(2, stride=2), dim
    raise ValueError(f"simple feature pyramid: unsupported scale {scale} (4, 2, 1, 0.5)")


class SimpleFeaturePyramid(BaseModule):
    def __init__(self, in_channels: int, out_channels: int = 256, scales: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
                 num_outs: int = 5, init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg)
        if num_outs not in (len(scales), len(scales) + 1):
            raise ValueError(f"num_outs must be {len(scales)} or {len(scales) + 1}, got {num_outs}")
        self.num_outs = num_outs
        self.stages = nn.ModuleList()
        for scale in scales:
            resample, channels = _scale_stage(in_channels, float(scale))
            self.stages.append(nn.Sequential(
                resample,
                nn.Conv2d(channels, out_channels, 1, bias=False), LayerNorm2d(out_channels),
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), LayerNorm2d(out_channels),
            ))
        for module in self.modules():  # detectron2's c2_msra_fill on the 1x1/3x3 convs
            if type(module) is nn.Conv2d:
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        x = inputs[-1]
        outs = [stage(x) for stage in self.stages]
        if self.num_outs > len(outs):
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return tuple(outs)
