"""Post-install self-check: the compiled OpenMMLab stack must import and run its ops on CPU."""
import sys

import torch


def main() -> int:
    import mmdet.models  # noqa: F401  (fails without mmcv._ext)
    import mmseg.models  # noqa: F401  (fails without ftfy/regex or mmcv._ext)
    from mmcv.ops import nms, roi_align

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    _, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2], f"mmcv.ops.nms kept {keep.tolist()}, expected [0, 2]"
    feat = torch.arange(16.0).reshape(1, 1, 4, 4)
    rois = torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0]])
    out = roi_align(feat, rois, (1, 1), 1.0, 0, "avg", False)  # samples at 0.5,1.5,2.5: mean 4*1.5+1.5
    assert abs(out.item() - 7.5) < 1e-5, f"mmcv.ops.roi_align gave {out.item()}, expected 7.5"
    print(f"self-check ok: torch {torch.__version__}, mmdet/mmseg import, nms and roi_align on CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
