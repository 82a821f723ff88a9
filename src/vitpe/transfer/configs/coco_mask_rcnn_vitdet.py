# COCO instance segmentation: Mask R-CNN on a ViTDet-layout ViT with the simple feature pyramid
# (detectron2 projects/ViTDet/configs/COCO/mask_rcnn_vitdet_b_100ep.py; docs/FIDELITY.md rows 32, 33).
# Inherits mmdet's Mask R-CNN model and its LSJ 100-epoch COCO instance base from the installed wheel
# (mmdet/.mim/configs); the changes are those of ViTDet (projects/ViTDet, not in the wheel): backbone,
# pyramid, 2-conv RPN, 4conv1fc box head and LN in the heads, LSJ with a fixed-size pad, AdamW with
# layer decay, iteration-based 100-epoch schedule.
# vitpe.transfer.runner fills in params.yaml (scales.<scale>.transfer.coco), the encoder and the paths.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::common/lsj-100e_coco-instance.py',
]

custom_imports = dict(imports=['vitpe.transfer.mm_det'], allow_failed_imports=False)

image_size = (1024, 1024)
norm_cfg = dict(type='LN2d', requires_grad=True)
model = dict(
    data_preprocessor=dict(
        pad_size_divisor=32,
        batch_augments=[dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]),
    backbone=dict(
        _delete_=True,
        type='VitpeViTDet',
        img_size=1024, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
        drop_path=0.1, window_size=14, global_blocks=[2, 5, 8, 11], use_rel_pos=True,
        checkpoint=None),
    neck=dict(
        _delete_=True,
        type='VitpeSimpleFPN', in_channels=768, out_channels=256, scales=(4.0, 2.0, 1.0, 0.5), num_outs=5),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead',
            conv_out_channels=256,
            norm_cfg=norm_cfg),
        # FCNMaskHead; a box wholly in the LSJ padding gets an empty mask on CPU too (mask_paste.py)
        mask_head=dict(type='VitpeFCNMaskHead', norm_cfg=norm_cfg)))

backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size, recompute_bbox=True,
         allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='Pad', size=image_size, pad_val=dict(img=(114, 114, 114))),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='Pad', size=image_size, pad_val=dict(img=(114, 114, 114))),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    _delete_=True,
    batch_size=8,
    num_workers=8,
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

# ViTDet 100-epoch schedule at batch 64: 184375 iterations, drops at 163889 and 177546, 250 warm-up
max_iters = 184375
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False, milestones=[163889, 177546], gamma=0.1),
]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',  # AmpOptimWrapper on CUDA (runner)
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
    constructor='VitpeLayerDecayConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.7, decay_pos_embed=False))
auto_scale_lr = dict(enable=False, base_batch_size=64)
log_processor = dict(by_epoch=False)
default_hooks = dict(checkpoint=None, logger=dict(interval=50))
custom_hooks = [dict(type='VitpeCheckpointHook', interval=5000)]
