"""Post-install self-check: the compiled OpenMMLab stack must import and run its ops on CPU, and on
CUDA too when a GPU is visible (a CPU-only mmcv passes the CPU check, then fails in the first GPU
transfer job)."""
import sys

import torch

REBUILD = "rebuild with VITPE_MMCV_CUDA=1 make setup"


class SelfCheckFailed(Exception):
    """One line saying what is broken and how to fix it."""


def cuda_available() -> bool:
    return torch.cuda.is_available()


def run_ops(device: str) -> None:
    """mmcv.ops.nms and roi_align on ``device`` tensors, checked against hand-computed results."""
    from mmcv.ops import nms, roi_align

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]], device=device)
    scores = torch.tensor([0.9, 0.8, 0.7], device=device)
    _, keep = nms(boxes, scores, iou_threshold=0.5)
    if keep.tolist() != [0, 2]:
        raise SelfCheckFailed(f"mmcv.ops.nms on {device} kept {keep.tolist()}, expected [0, 2]")
    feat = torch.arange(16.0, device=device).reshape(1, 1, 4, 4)
    rois = torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0]], device=device)
    out = roi_align(feat, rois, (1, 1), 1.0, 0, "avg", False)  # samples at 0.5,1.5,2.5: mean 4*1.5+1.5
    if abs(out.item() - 7.5) > 1e-5:
        raise SelfCheckFailed(f"mmcv.ops.roi_align on {device} gave {out.item()}, expected 7.5")


def check_cuda_ops() -> None:
    """Run the ops on the GPU; a CPU-only mmcv build has no CUDA kernels registered for them."""
    try:
        run_ops("cuda")
    except RuntimeError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if "not found" in first:  # mmcv's device registry: "nms_impl: implementation for device cuda:0 not found."
            raise SelfCheckFailed(f"a CUDA device is visible but mmcv was built without CUDA ops ({first}); "
                                  f"{REBUILD}") from None
        raise SelfCheckFailed(f"mmcv CUDA ops failed on this GPU: {first}") from None


def main() -> int:
    import mmdet.models  # noqa: F401  (fails without mmcv._ext)
    import mmseg.models  # noqa: F401  (fails without ftfy/regex or mmcv._ext)

    try:
        run_ops("cpu")
        devices = "CPU"
        if cuda_available():
            check_cuda_ops()
            devices = "CPU and CUDA"
    except SelfCheckFailed as exc:
        print(f"self-check failed: {exc}", file=sys.stderr)
        return 1
    print(f"self-check ok: torch {torch.__version__}, mmdet/mmseg import, nms and roi_align on {devices}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
