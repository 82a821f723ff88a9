"""All evaluations of one trained classifier (``evaluate_suite``: the model is loaded once), or of one
pretrained encoder and its fine-tuned and probed classifiers (``evaluate_encoder``), in one process;
each kind's metrics file is written exactly as its own ``vitpe eval <kind>`` command writes it.

At the tiny scale starting Python and importing torch costs several times the evaluations themselves,
so the workflow runs one process per model instead of one command per kind. Each writes every file it
was asked for or none of them: a partial set would look finished to Snakemake.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitpe.errors import ConfigError
from vitpe.evaluate.classification import classification_metrics
from vitpe.evaluate.common import load_trained
from vitpe.evaluate.pe_probe import pe_probe_metrics
from vitpe.evaluate.pretext import pretext_metrics
from vitpe.evaluate.robustness import plan_robustness, robustness_metrics
from vitpe.evaluate.shuffled import check_shuffle_settings, shuffle_metrics
from vitpe.io import all_or_none, write_json
from vitpe.runs import SupervisedRun, dataset_paths, pretrain_run, stage_run

#: the kinds of a suite, in the order they run; each writes <out_dir>/<kind>.json
KINDS: tuple[str, ...] = ("classify", "shuffle", "robustness", "pe_probe")

Evaluation = Callable[[nn.Module, torch.device], dict[str, Any]]


def _prepare(params: dict, run: SupervisedRun, kind: str) -> Evaluation:
    """The evaluation of ``kind`` for a loaded model, its settings checked now (before any loading)."""
    if kind == "classify":
        return lambda model, device: classification_metrics(model, device, run)
    if kind == "shuffle":
        settings = params["evaluation"]
        ratios, masks, gamma = settings["shuffle_ratios"], settings["shuffle_masks"], settings["consistency_ratio"]
        check_shuffle_settings(ratios, masks, gamma)
        return lambda model, device: shuffle_metrics(model, device, run, ratios, masks, gamma)
    if kind == "robustness":
        plan = plan_robustness(run, dataset_paths(params))
        return lambda model, device: robustness_metrics(model, device, run, plan)
    if kind == "pe_probe":
        return lambda model, device: pe_probe_metrics(model, run)
    raise ConfigError(f"eval suite: unknown kind {kind!r} (known: {', '.join(KINDS)})")


def suite_outputs(out_dir: Path, kinds: Sequence[str]) -> dict[str, Path]:
    """<out_dir>/<kind>.json per kind (duplicates dropped, order kept)."""
    return {kind: Path(out_dir) / f"{kind}.json" for kind in dict.fromkeys(kinds)}


def _write_all_or_none(outputs: dict[str, Path], compute: Callable[[], dict[str, dict[str, Any]]]
                       ) -> dict[str, dict[str, Any]]:
    """Run ``compute`` and write its metrics by kind to ``outputs`` once all succeeded; on any failure
    remove every one of the files, stale ones included, and let the error propagate."""
    with all_or_none(outputs.values()):
        results = compute()
        for kind, metrics in results.items():
            write_json(outputs[kind], metrics)
    return results


def evaluate_suite(params: dict, run: SupervisedRun, weights: Path, out_dir: Path,
                   kinds: Sequence[str] = KINDS, device: str | None = None) -> dict[str, dict[str, Any]]:
    """Evaluate ``weights`` for each of ``kinds`` with the model loaded once; return the metrics by kind.

    Settings come from ``params``: ``evaluation.*`` for the shuffle sweep, the active scale's
    ImageNet-C/-A/-O roots (all three parts, the default corruptions) for robustness, 5 folds for the
    PE probe. Every file is written atomically once all kinds succeeded, or none is.
    """
    outputs = suite_outputs(out_dir, kinds)
    if not outputs:
        raise ConfigError(f"eval suite: no kinds given (known: {', '.join(KINDS)})")

    def compute() -> dict[str, dict[str, Any]]:
        evaluations = {kind: _prepare(params, run, kind) for kind in outputs}
        model, dev = load_trained(run, weights, device)
        return {kind: evaluate(model, dev) for kind, evaluate in evaluations.items()}

    return _write_all_or_none(outputs, compute)


def evaluate_encoder(params: dict, experiment: str, pretrained: Path, log: Path, classifiers: dict[str, Path],
                     out_dir: Path, device: str | None = None) -> dict[str, dict[str, Any]]:
    """The evaluations of one pretrained encoder in one process: ``pretext`` (the pretraining model and
    its ``log``) and the top-1/top-5 of each protocol's classifier (``classifiers``: ``finetune`` /
    ``linprobe`` -> weights), written to <out_dir>/<kind>.json as ``vitpe eval pretext`` and
    ``vitpe eval classify --stage <protocol>`` write them; every file or none."""
    outputs = suite_outputs(out_dir, ["pretext", *classifiers])

    def compute() -> dict[str, dict[str, Any]]:
        runs = {stage: stage_run(params, stage, experiment) for stage in classifiers}
        results = {"pretext": pretext_metrics(pretrain_run(params, experiment), pretrained, log,
                                              dataset_paths(params)["imagenet"] / "val", device=device)}
        for stage, weights in classifiers.items():
            model, dev = load_trained(runs[stage], weights, device)
            results[stage] = classification_metrics(model, dev, runs[stage])
        return results

    return _write_all_or_none(outputs, compute)
