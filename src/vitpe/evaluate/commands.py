"""``vitpe eval ...`` commands. Heavy imports (torch, timm) stay inside the functions."""
from __future__ import annotations

import argparse
from pathlib import Path

from vitpe.config import add_params_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("classify", help="top-1/top-5 accuracy on the validation set",
                              description="Evaluate trained weights on the validation ImageFolder and "
                                          "write {top1, top5, num_images, scale} as JSON.")
    add_params_arguments(p)
    p.add_argument("--experiment", required=True, help="a name under `supervised:` in params.yaml")
    p.add_argument("--weights", required=True, type=Path, help="model.safetensors (timm keys)")
    p.add_argument("--out", required=True, type=Path, help="metrics JSON to write")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    p.set_defaults(func=_classify)


def _classify(args: argparse.Namespace) -> int:
    from vitpe.config import params_from_args, supervised_run
    from vitpe.evaluate.classification import evaluate_classification

    run = supervised_run(params_from_args(args), args.experiment)
    metrics = evaluate_classification(run, args.weights, args.out, device=args.device)
    print(f"{args.experiment}: top-1 {metrics['top1']:.2f}%  top-5 {metrics['top5']:.2f}%  "
          f"({metrics['num_images']} images, {metrics['scale']} scale)")
    return 0
