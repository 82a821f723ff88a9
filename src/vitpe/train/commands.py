"""``vitpe train ...`` commands. Heavy imports (torch, timm) stay inside the functions."""
from __future__ import annotations

import argparse
from pathlib import Path

from vitpe.config import add_params_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "supervised", help="train a supervised ViT (DeiT-S recipe); resumes from OUT/state/",
        description="Train a supervised ViT into OUT (model.safetensors and log.jsonl once complete; "
                    "work in progress in OUT/state/). Rerunning resumes from OUT/state/state.pt; "
                    "SIGTERM/SIGUSR1 checkpoint and exit 124.",
    )
    add_params_arguments(p)
    p.add_argument("--experiment", required=True, help="a name under `supervised:` in params.yaml")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--max-steps", type=int, default=None, metavar="N",
                   help="stop (with a resumable state) once N optimizer steps are done in total")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    p.set_defaults(func=_supervised)


def _supervised(args: argparse.Namespace) -> int:
    from vitpe.config import params_from_args, supervised_run
    from vitpe.train.supervised import train_supervised

    run = supervised_run(params_from_args(args), args.experiment)
    train_supervised(run, args.out, device=args.device, max_steps=args.max_steps)
    return 0
