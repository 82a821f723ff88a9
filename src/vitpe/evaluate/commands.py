"""``vitpe eval ...`` commands. Heavy imports (torch, timm) stay inside the functions."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vitpe.commands import Command, add_command, add_device_argument, add_weights_arguments, wrote

METRICS_HELP = "metrics JSON to write"
SUITE_KINDS = ("classify", "shuffle", "robustness", "pe_probe")  # vitpe.evaluate.suite.KINDS, torch-free here


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
        "MJP eval.py over a sweep of shuffle ratios (one seeded mask per batch, several independent masks per "
        "ratio) and consistency.py (CLS-feature L2 and argmax agreement, original vs shuffled); writes "
        "shuffled_top1_rX.XX (mean over masks), shuffled_top1_rX.XX_std, shuffled_top5_rX.XX, "
        "shuffled_fraction_rX.XX, consistency_l2, consistency_agreement, ... as flat JSON.")
    p.add_argument("--ratios", type=float, nargs="+", default=None, metavar="R",
                   help="shuffle ratios in [0, 1] (default: evaluation.shuffle_ratios; 0 = unshuffled)")
    p.add_argument("--consistency-ratio", type=float, default=None,
                   help="default: evaluation.consistency_ratio (official consistency.py: 0.5)")
    p.add_argument("--masks", type=int, default=None,
                   help="independent masks per ratio (default: evaluation.shuffle_masks; 1: official eval.py)")

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
        subparsers, "suite", _suite, "classify, shuffle, robustness and pe-probe of one model in one process",
        "Load the model once and write OUT_DIR/<kind>.json for each of --kinds, the same bytes as the separate "
        "commands with their defaults (the shuffle settings from evaluation.*); every file or none.", params=True)
    p.add_argument("--experiment", required=True,
                   help="a name under `supervised:` (or `pretrain:` with --stage finetune/linprobe)")
    p.add_argument("--stage", choices=("supervised", "finetune", "linprobe"), default="supervised",
                   help="which classifier the weights are (default: supervised)")
    p.add_argument("--weights", required=True, type=Path, help="model.safetensors (timm keys)")
    p.add_argument("--kinds", nargs="+", choices=SUITE_KINDS, default=list(SUITE_KINDS),
                   help=f"evaluations to run (default: all: {' '.join(SUITE_KINDS)})")
    p.add_argument("--out-dir", required=True, type=Path, help="directory of the <kind>.json metrics files")
    add_device_argument(p)

    p = add_command(
        subparsers, "encoder", _encoder, "pretext loss, fine-tune and linear-probe top-1 of one pretrained encoder",
        "In one process: OUT_DIR/pretext.json as `vitpe eval pretext` writes it, and OUT_DIR/<protocol>.json as "
        "`vitpe eval classify --stage <protocol>` writes it for each classifier given; every file or none.",
        params=True)
    p.add_argument("--experiment", required=True, help="a name under `pretrain:` in params.yaml")
    p.add_argument("--pretrained", required=True, type=Path, help="the pretraining model.safetensors")
    p.add_argument("--log", required=True, type=Path, help="its log.jsonl")
    p.add_argument("--finetune", type=Path, help="the fine-tuned model.safetensors")
    p.add_argument("--linprobe", type=Path, help="the linear-probed model.safetensors")
    p.add_argument("--out-dir", required=True, type=Path, help="directory of the <kind>.json metrics files")
    add_device_argument(p)

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
    print(_pretext_summary(args.experiment, metrics))
    return 0


def _pretext_summary(name: str, metrics: dict[str, Any]) -> str:
    delta = f"  |delta| {metrics['final_adv_l2']:.3f}" if "final_adv_l2" in metrics else ""
    return (f"{name}: validation masked-patch loss {metrics['val_loss']:.4f}  train (last epoch) "
            f"{metrics['train_loss_last_epoch']:.4f}{delta}")


def _encoder(args: argparse.Namespace) -> int:
    from vitpe.config import params_from_args
    from vitpe.evaluate.suite import evaluate_encoder, suite_outputs

    classifiers = {stage: path for stage, path in (("finetune", args.finetune), ("linprobe", args.linprobe)) if path}
    results = evaluate_encoder(params_from_args(args), args.experiment, args.pretrained, args.log, classifiers,
                               args.out_dir, device=args.device)
    print(_pretext_summary(args.experiment, results["pretext"]))
    for stage in classifiers:
        print(_classify_summary(f"{args.experiment} ({stage})", results[stage]))
    print(wrote(suite_outputs(args.out_dir, list(results)).values()))
    return 0


def _run(args: argparse.Namespace):
    from vitpe.config import params_from_args
    from vitpe.runs import stage_run

    params = params_from_args(args)
    return params, stage_run(params, args.stage, args.experiment)


def _classify_summary(name: str, metrics: dict[str, Any]) -> str:
    return (f"{name}: top-1 {metrics['top1']:.2f}%  top-5 {metrics['top5']:.2f}%  "
            f"({metrics['num_images']} images, {metrics['scale']} scale)")


def _shuffle_summary(name: str, metrics: dict[str, Any]) -> str:
    sweep = "  ".join(f"{key[len('shuffled_top1_r'):]}: {value:.1f} ± {metrics[key + '_std']:.1f}"
                      for key, value in metrics.items()
                      if key.startswith("shuffled_top1_r") and key + "_std" in metrics)
    return (f"{name}: shuffled top-1 by ratio ({metrics['shuffle_masks']} masks)  {sweep}\n"
            f"{name}: consistency at {metrics['consistency_ratio']:g}: L2 {metrics['consistency_l2']:.4f}  "
            f"agreement {metrics['consistency_agreement']:.3f}")


def _robustness_summary(name: str, metrics: dict[str, Any]) -> str:
    shown = [f"{k} {metrics[k]:.2f}" for k in ("mce", "mce_unnorm_15", "a_top1", "o_aupr") if k in metrics]
    return f"{name}: " + "  ".join(shown) + f"  ({metrics['scale']} scale)"


def _pe_probe_summary(name: str, metrics: dict[str, Any]) -> str:
    if metrics["status"] != "ok":
        return f"{name}: skipped: {metrics['reason']}"
    return (f"{name}: PE probe MAE abs 1D {metrics['abs_1d_mae']:.3f} 2D {metrics['abs_2d_mae']:.3f}"
            f"  rel 1D {metrics['rel_1d_mae']:.3f} 2D {metrics['rel_2d_mae']:.3f}")


SUMMARIES: dict[str, Callable[[str, dict[str, Any]], str]] = {
    "classify": _classify_summary, "shuffle": _shuffle_summary, "robustness": _robustness_summary,
    "pe_probe": _pe_probe_summary,
}


def _classify(args: argparse.Namespace) -> int:
    from vitpe.evaluate.classification import evaluate_classification

    _, run = _run(args)
    print(_classify_summary(args.experiment, evaluate_classification(run, args.weights, args.out, device=args.device)))
    return 0


def _shuffle(args: argparse.Namespace) -> int:
    from vitpe.evaluate.shuffled import evaluate_shuffle

    params, run = _run(args)
    settings = params["evaluation"]

    def given_or_params(value: Any, key: str) -> Any:
        return value if value is not None else settings[key]

    metrics = evaluate_shuffle(
        run, args.weights, args.out, ratios=given_or_params(args.ratios, "shuffle_ratios"),
        consistency_ratio=given_or_params(args.consistency_ratio, "consistency_ratio"),
        masks=given_or_params(args.masks, "shuffle_masks"), device=args.device)
    print(_shuffle_summary(args.experiment, metrics))
    return 0


def _robustness(args: argparse.Namespace) -> int:
    from vitpe.runs import dataset_paths
    from vitpe.evaluate.robustness import evaluate_robustness

    params, run = _run(args)
    metrics = evaluate_robustness(run, args.weights, args.out, dataset_paths(params), parts=args.parts,
                                  corruptions=args.corruptions, device=args.device)
    print(_robustness_summary(args.experiment, metrics))
    return 0


def _pe_probe(args: argparse.Namespace) -> int:
    from vitpe.evaluate.pe_probe import evaluate_pe_probe

    _, run = _run(args)
    print(_pe_probe_summary(args.experiment, evaluate_pe_probe(run, args.weights, args.out, folds=args.folds)))
    return 0


def _suite(args: argparse.Namespace) -> int:
    from vitpe.evaluate.suite import evaluate_suite, suite_outputs

    params, run = _run(args)
    results = evaluate_suite(params, run, args.weights, args.out_dir, kinds=args.kinds, device=args.device)
    for kind, metrics in results.items():
        print(SUMMARIES[kind](args.experiment, metrics))
    print(wrote(suite_outputs(args.out_dir, args.kinds).values()))
    return 0
