# ADE20K semantic segmentation: UperNet on the project's ViT (AdPE README; docs/FIDELITY.md rows 26, 27, 29-31).
# Inherits mmseg's MAE-B UperNet config from the installed wheel (mmseg/.mim/configs): data pipeline,
# UPerHead + FCN auxiliary head, sliding-window test, AdamW + warm-up + poly schedule. vitpe.transfer.runner
# fills in the per-scale recipe of params.yaml (scales.<scale>.transfer.ade20k), the encoder's
# architecture and the dataset paths; what is set here is what differs from the upstream file.
_base_ = ['mmseg::mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py']

custom_imports = dict(imports=['vitpe.transfer.mm_seg'], allow_failed_imports=False)

norm_cfg = dict(type='SyncBN', requires_grad=True)  # BN when the run is not distributed
model = dict(
    pretrained=None,  # the encoder is loaded by the backbone itself (asserted key counts)
    backbone=dict(
        _delete_=True,
        type='VitpeViT',
        img_size=512, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
        out_indices=None,  # blocks 4/6/8/12 of 12 (fractions of the depth otherwise)
        drop_path=0.1,
        checkpoint=None),
    neck=dict(type='Feature2Pyramid', embed_dim=768, rescales=[4, 2, 1, 0.5], norm_cfg=norm_cfg),
)

# Real AMP on GPU (the upstream "amp" config's fp16= key is ignored by mmengine): the runner switches
# this to AmpOptimWrapper on CUDA.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='VitpeLayerDecayConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.65, decay_pos_embed=True))

# mmengine's CheckpointHook writes objects torch.load(weights_only=True) refuses: use ours.
default_hooks = dict(checkpoint=None)
custom_hooks = [dict(type='VitpeCheckpointHook', interval=16000)]
