"""``vitpe train ...`` commands. Heavy imports (torch, timm) stay inside the functions."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from vitpe.commands import add_command, add_device_argument, wrote
from vitpe.models.released import ARCHS, FORMAT_NAMES

if TYPE_CHECKING:
    from vitpe.models.importers import ImportReport


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "supervised", _supervised, "train a supervised ViT (DeiT-S recipe); resumes from OUT/state/",
        params=True,
        description="Train a supervised ViT into OUT (model.safetensors and log.jsonl once complete; "
                    "work in progress in OUT/state/). Rerunning resumes from OUT/state/state.pt; "
                    "SIGTERM/SIGUSR1 checkpoint and exit 124.",
    )
    _run_arguments(p, "a name under `supervised:` in params.yaml")

    p = add_command(
        subparsers, "pretrain", _pretrain, "MAE / MAE+ / AdPE pretraining; resumes from OUT/state/", params=True,
        description="Pretrain into OUT: model.safetensors (encoder, decoder, AdPE delta), encoder.safetensors "
                    "(timm keys, for fine-tuning and transfer) and log.jsonl (loss, lr, |delta|) once complete.",
    )
    _run_arguments(p, "a name under `pretrain:` in params.yaml")

    for protocol, what in (("finetune", "fine-tune a pretrained encoder (MAE recipe: layer decay, global pool)"),
                           ("linprobe", "linear probing of a frozen pretrained encoder (BN + linear head, LARS)")):
        p = add_command(subparsers, protocol, _encoder_run, what + "; resumes from OUT/state/", params=True,
                        description=what[0].upper() + what[1:] + ", into OUT (model.safetensors, log.jsonl).")
        _run_arguments(p, "a name under `pretrain:` in params.yaml")
        p.add_argument("--pretrained", required=True, type=Path, help="encoder.safetensors of that experiment")
        p.set_defaults(protocol=protocol)

    p = add_command(
        subparsers, "import-weights", _import_weights,
        "turn an officially released checkpoint (DeiT, MJP, MAE, AdPE) into the weights file training writes",
        description="Read a released .pth checkpoint without running any code in it and write "
                    "OUT/model.safetensors (classifiers: deit, mjp, mae-finetuned) or OUT/encoder.safetensors "
                    "(pretrained encoders: mae, adpe-abs, adpe-rel), with the architecture read from the "
                    "tensors, so the eval, attack, fine-tune and transfer commands take it as they take a "
                    "trained one. Every tensor must be used or unused by design (decoder, mask token, "
                    "adversary); a file that does not fit is refused and nothing is written. Nothing is "
                    "downloaded: give the file.",
    )
    p.add_argument("--format", required=True, choices=FORMAT_NAMES,
                   help="the release: deit (timm/DeiT), mjp (MJP's DeiT with its unknown PE row and DAL head), "
                        "mae (MAE pretraining or its encoder release), mae-finetuned (MAE's fine-tuned "
                        "classifiers), adpe-abs or adpe-rel (AdPE encoders with absolute or relative PE)")
    p.add_argument("--checkpoint", required=True, type=Path, help="the released .pth file")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--arch", choices=tuple(ARCHS), default=None,
                   help="the architecture the checkpoint must have (default: read from its tensors)")
    p.add_argument("--num-heads", type=lambda text: _positive_int(text, "heads"), default=None, metavar="N",
                   help="attention heads, for a width no release has (default: that of the release of "
                        "its width)")
    p.add_argument("--rpe", choices=("irpe", "irpe_interp"), default=None,
                   help="adpe-rel only: the iRPE lookup it was pretrained with, discrete (irpe, the "
                        "default) or interpolated (irpe_interp, the coordinate adversary's)")

    p = add_command(
        subparsers, "import", _import_experiment,
        "import a published checkpoint of experiments.imported for the active scale (the workflow's rule)",
        params=True,
        description="Import experiments.imported.<EXPERIMENT> (its format, path and arch) as "
                    "`import-weights` does, into OUT, checked against the architecture the active scale runs "
                    "it as; a classifier's 1000-class head keeps the rows of the dataset's class folders "
                    "(ImageNet-1k wnids), so it scores the mini set's few classes at the smoke scale.",
    )
    p.add_argument("--experiment", required=True, help="a name under experiments.imported in params.yaml")
    p.add_argument("--out", required=True, type=Path, help="output directory")


def _run_arguments(p: argparse.ArgumentParser, experiment_help: str) -> None:
    p.add_argument("--experiment", required=True, help=experiment_help)
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--max-steps", type=_positive_int, default=None, metavar="N",
                   help="train up to N optimizer steps in total, then publish the weights (metadata "
                        "'truncated': steps done / total) and log.jsonl, keeping OUT/state/ so that a "
                        "rerun without --max-steps continues the run")
    p.add_argument("--threads", type=lambda text: _positive_int(text, "threads"), default=None, metavar="N",
                   help="torch CPU threads (default: OMP_NUM_THREADS, which Snakemake sets to the job's "
                        "threads, else torch's choice); a CPU run resumes only on the count it started with")
    add_device_argument(p)


def _positive_int(text: str, what: str = "steps") -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of {what}, got {text!r}")
    return value


def _set_threads(args: argparse.Namespace) -> None:
    """Before anything runs on torch: the count is part of a CPU run's resume fingerprint."""
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)


def _supervised(args: argparse.Namespace) -> int:
    _set_threads(args)
    from vitpe.config import params_from_args
    from vitpe.runs import supervised_run
    from vitpe.train.supervised import train_supervised

    run = supervised_run(params_from_args(args), args.experiment)
    train_supervised(run, args.out, device=args.device, max_steps=args.max_steps)
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    _set_threads(args)
    from vitpe.config import params_from_args
    from vitpe.runs import pretrain_run
    from vitpe.train.pretrain import train_pretrain

    run = pretrain_run(params_from_args(args), args.experiment)
    train_pretrain(run, args.out, device=args.device, max_steps=args.max_steps)
    return 0


def _encoder_run(args: argparse.Namespace) -> int:
    _set_threads(args)
    from vitpe.config import params_from_args
    from vitpe.runs import encoder_run
    from vitpe.train.supervised import train_supervised

    run = encoder_run(params_from_args(args), args.experiment, args.protocol, str(args.pretrained))
    train_supervised(run, args.out, device=args.device, max_steps=args.max_steps)
    return 0


def _import_weights(args: argparse.Namespace) -> int:
    from vitpe.models.importers import import_checkpoint

    report = import_checkpoint(args.format, args.checkpoint, args.out, arch=args.arch, num_heads=args.num_heads,
                               rpe=args.rpe)
    print(_imported_summary(args.format, report))
    return 0


def _import_experiment(args: argparse.Namespace) -> int:
    from vitpe.config import params_from_args
    from vitpe.train.published import import_experiment

    params = params_from_args(args)
    report = import_experiment(params, args.experiment, args.out)
    print(_imported_summary(params["experiments"]["imported"][args.experiment]["format"], report))
    return 0


def _imported_summary(fmt: str, report: ImportReport) -> str:
    spec = report.spec
    return wrote(report.path, f"{fmt}: width {spec.embed_dim}, depth {spec.depth}, {spec.num_heads} heads, "
                              f"{spec.img_size} px; {report.loaded} tensors used, {len(report.unused)} unused by design")
