# ADE20K semantic segmentation: UperNet on the project's ViT (AdPE README; docs/FIDELITY.md rows 26, 27, 29-31).
# Inherits mmseg's MAE-B UperNet config from the installed wheel (mmseg/.mim/configs): data pipeline,
# UPerHead + FCN auxiliary head, sliding-window test. What is set here is what differs from that file
# and is not a number of params.yaml: vitpe.transfer.runner fills in the per-scale recipe
# (scales.<scale>.transfer.ade20k: crop and resize sizes, iterations, batch, lr, weight and layer decay,
# warm-up, drop path, output blocks, head widths, test stride, checkpoint and log intervals, AMP, loader
# workers), the encoder's architecture and checkpoint, the dataset paths, the warm-up + poly schedule, and
# what both tasks share: the layer-decay AdamW (mmseg's betas) and the weights_only checkpoint hook.
_base_ = ['mmseg::mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py']

custom_imports = dict(imports=['vitpe.transfer.mm_seg'], allow_failed_imports=False)

norm_cfg = dict(type='SyncBN', requires_grad=True)  # BN when the run is not distributed
model = dict(
    pretrained=None,  # the encoder is loaded by the backbone itself (asserted key counts)
    backbone=dict(_delete_=True, type='VitpeViT'),
    # mmseg configs/_base_/models/upernet_mae.py: the 4 levels at 4x, 2x, 1x and 0.5x of the patch grid
    neck=dict(type='Feature2Pyramid', rescales=[4, 2, 1, 0.5], norm_cfg=norm_cfg),
)
