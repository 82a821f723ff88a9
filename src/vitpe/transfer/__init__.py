"""Downstream transfer of pretrained encoders (AdPE paper, arXiv 2303.07598): ADE20K semantic
segmentation with mmsegmentation (UperNet) and COCO instance segmentation with mmdetection
(Mask R-CNN, ViTDet layout).

- ``convert``: encoder checkpoint -> backbone weights (PE interpolation, asserted key counts);
- ``backbones``: the project's ViT as an OpenMMLab backbone (MAE-style multi-level outputs) and the
  ViTDet backbone (windowed/global attention blocks);
- ``simple_fpn``: ViTDet's simple feature pyramid (not in the mmdet wheel);
- ``mm_seg`` / ``mm_det``: registration in mmseg's / mmdet's registries (``custom_imports`` targets);
- ``optim``, ``hooks``: layer-wise lr decay and a weights_only-loadable checkpoint hook;
- ``configs/``: mm config files inheriting the upstream configs; ``runner``: params -> config -> run.
"""
