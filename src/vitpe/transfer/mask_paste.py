"""mmdet's FCNMaskHead, with an empty mask for a box that lies entirely outside the image.

The LSJ test pipeline pads every image to 1024 x 1024 and ``Pad`` makes the padded size the
``img_shape`` the box head clips to, so a box in the padding maps outside the original image once
rescaled. On GPU mmdet pastes masks over the whole image and such a box gets an empty mask; on CPU it
pastes box by box over the box's own extent, which is empty, and ``torch.arange`` fails. Both devices
now give the GPU result; boxes and scores are untouched.
"""
from __future__ import annotations

import numpy as np
import torch
from mmdet.models.roi_heads.mask_heads import FCNMaskHead
from torch import Tensor


class OutsideSafeFCNMaskHead(FCNMaskHead):
    def _predict_by_feat_single(self, mask_preds: Tensor, bboxes: Tensor, labels: Tensor, img_meta: dict,
                                rcnn_test_cfg, rescale: bool = False, activate_map: bool = False) -> Tensor:
        scale = bboxes.new_tensor(img_meta["scale_factor"]).repeat((1, 2))
        img_h, img_w = img_meta["ori_shape"][:2]
        if rescale:  # the pasting frame, as the parent computes it
            boxes = bboxes / scale
        else:
            boxes = bboxes
            img_h = int(np.round(img_h * scale[0, 1].item()))
            img_w = int(np.round(img_w * scale[0, 0].item()))
        outside = (boxes[:, 0] >= img_w) | (boxes[:, 1] >= img_h) | (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0)
        if not outside.any():
            return super()._predict_by_feat_single(mask_preds, bboxes, labels, img_meta, rcnn_test_cfg,
                                                   rescale, activate_map)
        dtype = torch.bool if rcnn_test_cfg.mask_thr_binary >= 0 else torch.uint8
        masks = torch.zeros(len(bboxes), img_h, img_w, dtype=dtype, device=bboxes.device)
        inside = ~outside
        if inside.any():
            masks[inside] = super()._predict_by_feat_single(mask_preds[inside], bboxes[inside], labels[inside],
                                                            img_meta, rcnn_test_cfg, rescale, activate_map)
        return masks
