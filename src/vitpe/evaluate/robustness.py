"""ImageNet-C, ImageNet-A and ImageNet-O evaluation of a trained model.

Protocols of the official MJP scripts ``eval/cal_imagenet_c.py`` and ``eval/cal_imagenet_ao.py``, of
hendrycks/robustness ``ImageNet-C/test.py`` and of hendrycks/natural-adv-examples (docs/FIDELITY.md
rows 7, 20, 21):
- ImageNet-C: every corruption x severity folder (<corruption>/<severity>/<class>/*), CenterCrop only
  (the sets are already Resize+CenterCrop'ed), top-1 error over all training logits; metrics from
  ``robustness_metrics.corruption_summary``. By default the 15 benchmark corruptions (required: mCE)
  and the 4 extras that are present (docs/FIDELITY.md row 20; many copies hold only the 15, and the
  missing extras are named in the metrics); the released MJP script's 5-corruption mean as well.
- ImageNet-A: Resize + CenterCrop, logits restricted to the subset's class-index mask, top-1 (%),
  RMS calibration error and AURRA of the max softmax over the masked logits.
- ImageNet-O: OOD = the ImageNet-O images, in-distribution = the validation images of the classes
  ImageNet-O has folders for; score = -max softmax over the ImageNet-O mask; AUPR/AUROC/FPR95 (%).

Class-index masks come from the subset's folder names (``vitpe.data.subsets.class_index_mask``), so a
copy with fewer classes evaluates over the classes it has; with the 1000 ImageNet classes each folder
must be in the official 200-class list of its set (``hendrycks_lists``).
"""
from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, Subset

from vitpe.runs import SupervisedRun
from vitpe.data.subsets import ALL_CORRUPTIONS, EXTRA_CORRUPTIONS, SEVERITIES, class_index_mask
from vitpe.data.transforms import center_crop_transform, eval_transform
from vitpe.errors import ConfigError, DataError
from vitpe.evaluate.common import eval_loader, iterate_logits, load_trained, training_classes
from vitpe.data.hendrycks_lists import OFFICIAL_INDICES
from vitpe.evaluate.robustness_metrics import aurra, corruption_summary, ood_measures, rms_calibration_error
from vitpe.io import write_json
from vitpe.train.data import image_folder
from vitpe.train.distributed import autocast

PARTS = ("c", "a", "o")
_ROOT_KEYS = {"c": "imagenet_c", "a": "imagenet_a", "o": "imagenet_o"}


def subset_mask(classes: list[str], root: Path, kind: str) -> list[int]:
    """Training-logit indices of the class folders at ``root``, as many as the data has.

    With the 1000 ImageNet training classes every folder must be one of the official 200 of ``kind``
    (a renamed set, or ImageNet-A and -O swapped, would score the wrong logits); fewer of them is a
    class subset, evaluated over its own classes and reported on stderr.
    """
    mask = class_index_mask(classes, root)
    if len(classes) != 1000:
        return mask
    official = set(OFFICIAL_INDICES[kind])
    foreign = [i for i in mask if i not in official]
    if foreign:
        raise DataError(f"{Path(root) / classes[foreign[0]]}: not a class of the official {kind} list "
                        f"({len(foreign)} of the {len(mask)} class folders are not); renamed or swapped set?")
    if len(mask) < len(official):
        print(f"{root}: {len(mask)} of the {len(official)} official {kind} classes; metrics over these",
              file=sys.stderr)
    return mask


class _ToLogit:
    """Target transform: a subset folder's class index -> the training logit index (picklable)."""

    def __init__(self, mask: list[int]) -> None:
        self.mask = mask

    def __call__(self, target: int) -> int:
        return self.mask[target]


def select_corruptions(root: Path, requested: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(corruptions to evaluate, extras missing) under the ImageNet-C ``root``.

    ``None``: the 15 benchmark corruptions, each required (mCE), plus the 4 extras whose folders
    exist. Corruptions named in ``requested`` are all required. A missing one fails with its folder.
    """
    names = list(ALL_CORRUPTIONS if requested is None else dict.fromkeys(requested))
    optional = EXTRA_CORRUPTIONS if requested is None else ()
    missing = [c for c in names if not (Path(root) / c).is_dir()]
    for name in missing:
        if name not in optional:
            why = "requested with --corruptions" if requested is not None else \
                "one of the 15 benchmark corruptions mCE is defined over"
            raise DataError(f"{Path(root) / name}: ImageNet-C corruption folder not found ({why})")
    return [c for c in names if c not in missing], missing


def imagenet_c_errors(model: nn.Module, device: torch.device, run: SupervisedRun, root: Path,
                      classes: list[str], corruptions: Sequence[str] = ALL_CORRUPTIONS
                      ) -> tuple[dict[tuple[str, int], float], int]:
    """Top-1 error (%) per (corruption, severity) and the number of images evaluated.

    All folders go through one loader (full batches across folder boundaries); the in-order
    predictions are split back by folder.
    """
    transform = center_crop_transform(run.model.img_size)
    sets, keys = [], []
    for corruption in corruptions:
        for severity in SEVERITIES:
            folder = Path(root) / corruption / str(severity)
            dataset = image_folder(folder, transform)
            # ImageFolder and the training classes are both sorted by name: mask[target] = logit index
            dataset.target_transform = _ToLogit(class_index_mask(classes, folder))
            sets.append(dataset)
            keys.append((corruption, severity))
    combined = ConcatDataset(sets)
    wrong = torch.cat([logits.argmax(1) != targets
                       for logits, targets in iterate_logits(model, eval_loader(combined, run, device), device)])
    bounds = [0, *combined.cumulative_sizes]
    errors = {key: 100.0 * float(wrong[lo:hi].double().mean()) for key, lo, hi in zip(keys, bounds, bounds[1:])}
    return errors, len(wrong)


def imagenet_a_metrics(model: nn.Module, device: torch.device, run: SupervisedRun, root: Path,
                       classes: list[str]) -> dict[str, float]:
    """Top-1 (%) over the subset's masked logits, RMS calibration error (%) and AURRA (%)."""
    dataset = image_folder(root, eval_transform(run.model.img_size, run.recipe.test_crop_ratio))
    mask = subset_mask(classes, root, "imagenet_a")
    confidence, correct = [], []
    for logits, targets in iterate_logits(model, eval_loader(dataset, run, device), device):
        masked = logits[:, mask]  # subset targets index the mask (both sorted by class name)
        confidence.append(masked.softmax(1).max(1).values)
        correct.append(masked.argmax(1) == targets)
    conf = torch.cat(confidence).numpy()
    hits = torch.cat(correct).numpy()
    return {
        "a_top1": 100.0 * float(hits.mean()),
        "a_calib_rms": 100.0 * rms_calibration_error(conf, hits),
        "a_aurra": 100.0 * aurra(conf, hits),
        "a_num_images": len(hits),
        "a_num_classes": len(mask),
    }


def _neg_msp(model: nn.Module, device: torch.device, run: SupervisedRun, dataset: Any,
             mask: list[int]) -> np.ndarray:
    scores = [-logits[:, mask].softmax(1).max(1).values
              for logits, _ in iterate_logits(model, eval_loader(dataset, run, device), device)]
    return torch.cat(scores).double().numpy()


def imagenet_o_metrics(model: nn.Module, device: torch.device, run: SupervisedRun, root: Path,
                       classes: list[str]) -> dict[str, float]:
    """AUPR, AUROC, FPR95 (%) of -MSP over the ImageNet-O mask, OOD positive, ID = matching val classes."""
    transform = eval_transform(run.model.img_size, run.recipe.test_crop_ratio)
    ood = image_folder(root, transform)
    mask = subset_mask(classes, root, "imagenet_o")
    val = image_folder(run.val_dir, transform)
    missing = sorted(set(ood.classes) - set(val.classes))
    if missing:
        raise DataError(f"{run.val_dir}: no validation folder for ImageNet-O class {missing[0]!r} "
                        f"(the in-distribution set is val/<class> for every ImageNet-O class)")
    wanted = {val.class_to_idx[name] for name in ood.classes}
    in_dist = Subset(val, [i for i, target in enumerate(val.targets) if target in wanted])
    measures = ood_measures(_neg_msp(model, device, run, ood, mask), _neg_msp(model, device, run, in_dist, mask))
    return {
        "o_aupr": 100.0 * measures["aupr"],
        "o_auroc": 100.0 * measures["auroc"],
        "o_fpr95": 100.0 * measures["fpr95"],
        "o_num_ood": len(ood),
        "o_num_id": len(in_dist),
        "o_num_classes": len(mask),
    }


@dataclass(frozen=True)
class RobustnessPlan:
    """What ``robustness_metrics`` evaluates, checked before any model is loaded."""

    parts: list[str]
    roots: dict[str, Path]  # "imagenet_c"/"imagenet_a"/"imagenet_o" -> root, for the parts evaluated
    corruptions: list[str]  # ImageNet-C corruptions to evaluate ([] without "c")
    missing_extras: list[str]  # extras absent from the ImageNet-C root
    classes: list[str]  # training class folders: the logit order


def plan_robustness(run: SupervisedRun, roots: Mapping[str, Path], parts: Sequence[str] = PARTS,
                    corruptions: Sequence[str] | None = None) -> RobustnessPlan:
    """Check the parts, corruptions and dataset roots (a ConfigError / DataError naming the first bad
    one) and resolve what to evaluate; see ``evaluate_robustness``."""
    parts = list(dict.fromkeys(parts))
    unknown = [p for p in parts if p not in PARTS] + [c for c in corruptions or () if c not in ALL_CORRUPTIONS]
    if unknown or not parts or corruptions is not None and not corruptions:
        raise ConfigError(f"robustness: unknown part or corruption {unknown[0] if unknown else '(none given)'!r} "
                          f"(parts: {', '.join(PARTS)}; corruptions: the 19 ImageNet-C names)")
    for part in parts:  # fail on a missing dataset before spending time on the others
        root = Path(roots[_ROOT_KEYS[part]])
        if not root.is_dir():
            raise DataError(f"{root}: {_ROOT_KEYS[part].replace('_', '-')} dataset not found")
    selected, missing_extras = [], []
    if "c" in parts:
        c_root = Path(roots["imagenet_c"])
        selected, missing_extras = select_corruptions(c_root, corruptions)
        if missing_extras:
            print(f"{c_root}: extra corruptions not found: {', '.join(missing_extras)}; mCE and the 15-corruption "
                  "means are complete, mce_unnorm_19 and mce_unnorm_extra4 need all 4 extras", file=sys.stderr)
    return RobustnessPlan(parts, {_ROOT_KEYS[p]: Path(roots[_ROOT_KEYS[p]]) for p in parts}, selected,
                          missing_extras, training_classes(run))


def robustness_metrics(model: nn.Module, device: torch.device, run: SupervisedRun,
                       plan: RobustnessPlan) -> dict[str, Any]:
    """The flat metrics ``evaluate_robustness`` writes, for a loaded model."""
    metrics: dict[str, Any] = {}
    with autocast(device, run.runtime.eval_amp):
        if "c" in plan.parts:
            errors, count = imagenet_c_errors(model, device, run, plan.roots["imagenet_c"], plan.classes,
                                              plan.corruptions)
            metrics.update(corruption_summary(errors))
            metrics["c_num_images"] = count
            metrics["c_missing_extra_corruptions"] = ", ".join(plan.missing_extras)  # flat JSON: one string, "" if none
        if "a" in plan.parts:
            metrics.update(imagenet_a_metrics(model, device, run, plan.roots["imagenet_a"], plan.classes))
        if "o" in plan.parts:
            metrics.update(imagenet_o_metrics(model, device, run, plan.roots["imagenet_o"], plan.classes))
    metrics["scale"] = run.scale
    return metrics


def evaluate_robustness(run: SupervisedRun, weights: Path, out_json: Path, roots: Mapping[str, Path],
                        parts: Sequence[str] = PARTS, corruptions: Sequence[str] | None = None,
                        device: str | None = None) -> dict[str, Any]:
    """Evaluate ``parts`` ("c", "a", "o") and write one flat JSON atomically (nothing on failure).

    ``roots`` maps "imagenet_c"/"imagenet_a"/"imagenet_o" to the dataset roots (config.dataset_paths).
    ``corruptions``: None for the 15 benchmark ones plus the extras present (``select_corruptions``).
    """
    plan = plan_robustness(run, roots, parts, corruptions)
    model, dev = load_trained(run, weights, device)
    metrics = robustness_metrics(model, dev, run, plan)
    write_json(out_json, metrics)
    return metrics
