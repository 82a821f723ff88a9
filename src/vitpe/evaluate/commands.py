"""``vitpe eval ...`` commands. Heavy imports (torch, timm) stay inside the functions."""
from __future__ import annotations

import argparse
from pathlib import Path

from vitpe.commands import Command, add_command, add_weights_arguments

METRICS_HELP = "metrics JSON to write"


def _model_command(subparsers: argparse._SubParsersAction, name: str, run: Command, help: str, description: str,
                   device: bool = True) -> argparse.ArgumentParser:
    """A command evaluating one trained classifier (supervised, fine-tuned or linear-probed)."""
    p = add_command(subparsers, name, run, help, description, params=True)
    p.add_argument("--experiment", required=True,
                   help="a name under `supervised:` (or `pretrain:` with --stage finetune/linprobe)")
    p.add_argument("--stage", choices=("supervised", "finetune", "linprobe"), default="supervised",
                   help="which classifier the weights are (default: supervised)")
    add_weights_arguments(p, "model.safetensors (timm keys)", METRICS_HELP, device=device)
    return p


def register(subparsers: argparse._SubParsersAction) -> None:
    _model_command(subparsers, "classify", _classify, "top-1/top-5 accuracy on the validation set",
                   "Evaluate trained weights on the validation ImageFolder and write {top1, top5, num_images, "
                   "scale} as JSON.")

    p = _model_command(
        subparsers, "shuffle", _shuffle,
        "accuracy under MJP-shuffled inputs (ratio sweep) and prediction consistency",
        "MJP eval.py over a sweep of shuffle ratios (one seeded mask per batch) and consistency.py (CLS-feature "
        "L2 and argmax agreement, original vs shuffled); writes shuffled_top1_rX.XX, shuffled_top5_rX.XX, "
        "shuffled_fraction_rX.XX, consistency_l2, consistency_agreement, ... as flat JSON.")
    p.add_argument("--ratios", type=float, nargs="+", default=None, metavar="R",
                   help="shuffle ratios in [0, 1] (default: 0 0.1 0.2 0.3 0.5 0.7 0.9; 0 = unshuffled)")
    p.add_argument("--consistency-ratio", type=float, default=0.5, help="official consistency.py: 0.5")

    p = _model_command(
        subparsers, "robustness", _robustness, "ImageNet-C error matrix and mCE, ImageNet-A top-1, ImageNet-O AUPR",
        "Evaluate on the ImageNet-C/-A/-O roots of the active scale and write err_<c>_<s>, ce_<c>, mce, "
        "mce_unnorm_15/19, a_top1, o_aupr, o_auroc, o_fpr95, ... as flat JSON.")
    p.add_argument("--parts", nargs="+", choices=("c", "a", "o"), default=["c", "a", "o"],
                   help="which datasets (default: all three)")
    p.add_argument("--corruptions", nargs="+", default=None, metavar="NAME",
                   help="ImageNet-C corruptions, all required (default: the 15 benchmark ones, required "
                        "for mCE, and those of the 4 extras that are present)")

    p = _model_command(
        subparsers, "pe-probe", _pe_probe, "linear probes of position from the PE table, and its singular values",
        "pestudy: 5-fold CV linear regression (MAE) of absolute/relative 1D/2D positions from the PE rows, plus "
        "the singular-value spectrum (sv_000, ...); a PE without a table gets status 'skipped' and a reason.",
        device=False)
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (official: 5)")

    p = add_command(
        subparsers, "pretext", _pretext, "masked-patch loss of a pretrained MAE/MAE+/AdPE model on validation images",
        "Validation masked-patch loss with seeded masks plus a summary of the pretraining log "
        "(first/last-epoch loss, final |delta|); flat JSON.", params=True)
    p.add_argument("--experiment", required=True, help="a name under `pretrain:` in params.yaml")
    add_weights_arguments(p, "the pretraining model.safetensors", METRICS_HELP)
    p.add_argument("--log", required=True, type=Path, help="its log.jsonl")


def _pretext(args: argparse.Namespace) -> int:
    from vitpe.config import params_from_args
    from vitpe.runs import dataset_paths, pretrain_run
    from vitpe.evaluate.pretext import evaluate_pretext

    params = params_from_args(args)
    metrics = evaluate_pretext(pretrain_run(params, args.experiment), args.weights, args.log,
                               dataset_paths(params)["imagenet"] / "val", args.out, device=args.device)
    delta = f"  |delta| {metrics['final_adv_l2']:.3f}" if "final_adv_l2" in metrics else ""
    print(f"{args.experiment}: validation masked-patch loss {metrics['val_loss']:.4f}  train (last epoch) "
          f"{metrics['train_loss_last_epoch']:.4f}{delta}")
    return 0


def _run(args: argparse.Namespace):
    from vitpe.config import params_from_args
    from vitpe.runs import stage_run

    params = params_from_args(args)
    return params, stage_run(params, args.stage, args.experiment)


def _classify(args: argparse.Namespace) -> int:
    from vitpe.evaluate.classification import evaluate_classification

    _, run = _run(args)
    metrics = evaluate_classification(run, args.weights, args.out, device=args.device)
    print(f"{args.experiment}: top-1 {metrics['top1']:.2f}%  top-5 {metrics['top5']:.2f}%  "
          f"({metrics['num_images']} images, {metrics['scale']} scale)")
    return 0


def _shuffle(args: argparse.Namespace) -> int:
    from vitpe.evaluate.shuffled import DEFAULT_RATIOS, evaluate_shuffle, ratio_key

    _, run = _run(args)
    ratios = args.ratios if args.ratios is not None else DEFAULT_RATIOS
    metrics = evaluate_shuffle(run, args.weights, args.out, ratios=ratios,
                               consistency_ratio=args.consistency_ratio, device=args.device)
    sweep = "  ".join(f"{r:g}: {metrics[f'shuffled_top1_{ratio_key(r)}']:.1f}" for r in ratios)
    print(f"{args.experiment}: shuffled top-1 by ratio  {sweep}\n"
          f"{args.experiment}: consistency at {args.consistency_ratio:g}: L2 {metrics['consistency_l2']:.4f}  "
          f"agreement {metrics['consistency_agreement']:.3f}")
    return 0


def _robustness(args: argparse.Namespace) -> int:
    from vitpe.runs import dataset_paths
    from vitpe.evaluate.robustness import evaluate_robustness

    params, run = _run(args)
    metrics = evaluate_robustness(run, args.weights, args.out, dataset_paths(params), parts=args.parts,
                                  corruptions=args.corruptions, device=args.device)
    shown = [f"{k} {metrics[k]:.2f}" for k in ("mce", "mce_unnorm_15", "a_top1", "o_aupr") if k in metrics]
    print(f"{args.experiment}: " + "  ".join(shown) + f"  ({metrics['scale']} scale)")
    return 0


def _pe_probe(args: argparse.Namespace) -> int:
    from vitpe.evaluate.pe_probe import evaluate_pe_probe

    _, run = _run(args)
    metrics = evaluate_pe_probe(run, args.weights, args.out, folds=args.folds)
    if metrics["status"] != "ok":
        print(f"{args.experiment}: skipped: {metrics['reason']}")
    else:
        print(f"{args.experiment}: PE probe MAE abs 1D {metrics['abs_1d_mae']:.3f} 2D {metrics['abs_2d_mae']:.3f}"
              f"  rel 1D {metrics['rel_1d_mae']:.3f} 2D {metrics['rel_2d_mae']:.3f}")
    return 0
