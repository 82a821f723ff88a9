# COCO instance segmentation: Mask R-CNN on a ViTDet-layout ViT with the simple feature pyramid
# (detectron2 projects/ViTDet/configs/COCO/mask_rcnn_vitdet_b_100ep.py; docs/FIDELITY.md rows 32, 33).
# Inherits mmdet's Mask R-CNN model and its LSJ 100-epoch COCO instance base from the installed wheel
# (mmdet/.mim/configs); the changes are those of ViTDet (projects/ViTDet, not in the wheel): backbone,
# pyramid, 2-conv RPN, 4conv1fc box head and LN in the heads, LSJ with a fixed-size pad. What is set here
# is not a number of params.yaml: vitpe.transfer.runner fills in the per-scale recipe
# (scales.<scale>.transfer.coco: image size, iterations, milestones, batch, lr, weight and layer decay,
# warm-up, drop path, windows, global blocks, head widths, test score threshold, RoI samples, proposals,
# checkpoint and log intervals, AMP, loader workers), the encoder's architecture and checkpoint, the
# dataset paths, the iteration-based warm-up + step schedule, and what both tasks share: ViTDet's AdamW
# with layer decay (detectron2 configs/common/optim.py) and the weights_only checkpoint hook.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::common/lsj-100e_coco-instance.py',
]

custom_imports = dict(imports=['vitpe.transfer.mm_det'], allow_failed_imports=False)

norm_cfg = dict(type='LN2d', requires_grad=True)
model = dict(
    data_preprocessor=dict(
        pad_size_divisor=32,
        batch_augments=[dict(type='BatchFixedSizePad', pad_mask=True)]),  # size: the LSJ image size
    backbone=dict(_delete_=True, type='VitpeViTDet'),
    # ViTDet's simple feature pyramid: 4 levels at 4x .. 0.5x of the patch grid, plus a pooled 5th
    neck=dict(_delete_=True, type='VitpeSimpleFPN', scales=(4.0, 2.0, 1.0, 0.5), num_outs=5),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(type='Shared4Conv1FCBBoxHead', norm_cfg=norm_cfg),
        # FCNMaskHead; a box wholly in the LSJ padding gets an empty mask on CPU too (mask_paste.py)
        mask_head=dict(type='VitpeFCNMaskHead', norm_cfg=norm_cfg)))

# LSJ (ViTDet): scale jitter 0.1-2.0 of the image size, a crop and a pad to it (the runner sets the sizes)
backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='Pad', pad_val=dict(img=(114, 114, 114))),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', keep_ratio=True),
    dict(type='Pad', pad_val=dict(img=(114, 114, 114))),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    _delete_=True,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='CocoDataset',
        data_root='data/coco/',
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

auto_scale_lr = dict(enable=False)  # the recipe's lr is for its batch_size
