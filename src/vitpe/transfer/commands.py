"""``vitpe transfer {ade20k,coco}``: fine-tune a pretrained encoder downstream and write metrics JSON."""
from __future__ import annotations

import argparse
from pathlib import Path

from vitpe.commands import add_command

HELP = {
    "ade20k": ("ADE20K semantic segmentation (UperNet, mmseg): mIoU, aAcc",
               "Fine-tune the encoder with UperNet on ADE20K (the embedded ADE20K-layout set at the tiny "
               "scale), evaluate with sliding windows and write ade20k_miou, ade20k_aacc, ade20k_macc "
               "(mmseg IoUMetric, percent) as flat JSON."),
    "coco": ("COCO detection / instance segmentation (Mask R-CNN, ViTDet, mmdet): AP box/mask",
             "Fine-tune the encoder with a ViTDet-style Mask R-CNN on COCO (the embedded COCO-layout set "
             "at the tiny scale) and write coco_ap_box, coco_ap50_box, coco_ap75_box, coco_ap_mask, ... "
             "(mmdet CocoMetric, fractions in [0, 1]) as flat JSON."),
}


def _run(args: argparse.Namespace) -> int:
    from vitpe.config import params_from_args
    from vitpe.runs import transfer_run
    from vitpe.transfer.runner import run_transfer

    run = transfer_run(params_from_args(args), args.task, args.experiment)
    metrics = run_transfer(run, args.encoder, args.work_dir, args.out, weights_out=args.weights_out,
                           keep_state=args.keep_state, threads=args.threads)
    shown = ", ".join(f"{k} {v:.3f}" for k, v in sorted(metrics.items()) if isinstance(v, float))
    print(f"wrote {args.out}: {shown}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    for task, (help_text, description) in HELP.items():
        p = add_command(subparsers, task, _run, help_text, description, params=True)
        p.add_argument("--experiment", required=True,
                       help="pretraining experiment the encoder comes from (params pretrain.<name>)")
        p.add_argument("--encoder", required=True, type=Path, help="encoder.safetensors of a pretraining run")
        p.add_argument("--work-dir", required=True, type=Path,
                       help="mmengine work dir: logs and state/last.pth (resumed when present)")
        p.add_argument("--out", required=True, type=Path, help="metrics JSON to write")
        p.add_argument("--weights-out", type=Path, default=None, help="fine-tuned model (safetensors, mm keys)")
        p.add_argument("--keep-state", action="store_true", help="keep state/last.pth after a successful run")
        p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
        p.set_defaults(task=task)
