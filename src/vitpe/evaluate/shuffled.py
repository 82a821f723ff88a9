"""MJP's shuffled-input evaluations (official MJP code, ``eval.py`` and ``consistency.py``).

- Accuracy under MJP-shuffled validation images across a sweep of shuffle ratios (official
  ``eval.py``, which hard-codes 0.9; here a parameter, docs/FIDELITY.md row 18): per batch one new block
  mask and permutation shared by the whole batch, the unknown PE at shuffled positions for an MJP
  model, and for a plain model the PE of the slot a patch moved into (the ViT decides, see
  ``VisionTransformer.embed``). Test transform: Resize + CenterCrop, as for clean accuracy.
- Prediction consistency (official ``consistency.py``, ratio 0.5): images squashed to the model size
  with no crop, a fresh mask and permutation per image; the mean L2 distance between the final-norm
  CLS features of the original and the shuffled image, and the share of images whose predicted class
  is unchanged (no labels needed).

Each ratio is evaluated under ``evaluation.shuffle_masks`` independent masks (the official scripts
draw one per batch, so when the validation set fits one batch a single draw decides the accuracy):
the metrics are means over masks, with the standard deviation over masks next to them. All ratios
and masks share one pass over the images, and consistency shares each batch's original pass. The official scripts seed
nothing; here every draw comes from generators seeded by (params seed, purpose, ratio, mask index),
so the metrics are reproducible and adding a ratio or a mask leaves the others unchanged.
Ratio 0 means "not shuffled" (the official mask generator would read ratio <= 0 as 0.1): it is
evaluated once, every mask being the clean input.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vitpe.runs import SupervisedRun
from vitpe.errors import ConfigError
from vitpe.data.transforms import squash_transform
from vitpe.evaluate.common import TopKCounter, eval_loader, load_trained
from vitpe.train.data import image_folder
from vitpe.io import write_json
from vitpe.mjp.forward import ShuffledForward, shuffled_features
from vitpe.mjp.jigsaw import Jigsaw, draw_jigsaw
from vitpe.train.data import build_eval_loader, mix_seed
from vitpe.train.distributed import autocast

DEFAULT_RATIOS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
CONSISTENCY_RATIO = 0.5  # official consistency.py
_SWEEP, _CONSISTENCY = 1, 2  # seed streams

#: draws a jigsaw with the given number of rows (1 = shared by the batch), or None for clean input
JigsawDraw = Callable[[int], "Jigsaw | None"]


def ratio_key(ratio: float) -> str:
    """The metric-key suffix of a shuffle ratio: 0.3 -> "r0.30"."""
    return f"r{ratio:.2f}"


def mjp_draws(grid: int, ratio: float, seed: int) -> JigsawDraw:
    """Seeded MJP shuffles at ``ratio`` (Python-``random``-style block geometry, NumPy permutations)."""
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(f"shuffle ratio {ratio} is outside [0, 1]")
    py_rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)

    def draw(rows: int) -> Jigsaw | None:
        if ratio == 0.0:
            return None
        return draw_jigsaw("mjp", grid, rows=rows, ratio=ratio, py_rng=py_rng, np_rng=np_rng)

    return draw


def mask_seed(seed: int, stream: int, ratio: float, mask: int) -> int:
    """The seed of mask ``mask`` at ``ratio`` in seed stream ``stream`` (sweep or consistency)."""
    return mix_seed(seed, stream, round(ratio * 10_000), mask)


def masks_at(ratio: float, masks: int) -> int:
    """Masks evaluated at ``ratio``: ``masks``, but one at ratio 0 (every mask is the clean input)."""
    return 1 if ratio == 0.0 else masks


@torch.inference_mode()
def shuffled_accuracies(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                        draws: Mapping[Hashable, JigsawDraw], device: torch.device | str = "cpu"
                        ) -> dict[Hashable, dict[str, float]]:
    """``shuffled_accuracy`` under each of ``draws`` (e.g. one per ratio and mask) in one pass over
    ``batches``: each batch is loaded once, and each draw sees the batches in order, as if alone."""
    counts = {key: TopKCounter(k=5) for key in draws}
    shuffled = dict.fromkeys(draws, 0.0)
    for images, targets in batches:
        x = images.to(device, non_blocking=True)
        for key, draw in draws.items():
            jigsaw = draw(1)
            jigsaw = None if jigsaw is None else jigsaw.to(device)
            counts[key].update(model(x, jigsaw), targets)
            if jigsaw is not None and jigsaw.unk is not None:
                shuffled[key] += float(jigsaw.unk.float().mean()) * len(targets)
    return {key: {**c.percent(), "num_images": c.seen, "shuffled_fraction": shuffled[key] / c.seen}
            for key, c in counts.items()}


def shuffled_accuracy(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                      draw: JigsawDraw, device: torch.device | str = "cpu") -> dict[str, float]:
    """Top-1/top-5 (%) with one jigsaw per batch, shared by its images (official eval.py); ``model(images,
    jigsaw)`` classifies shuffled input (a ViT inside vitpe.mjp.forward.ShuffledForward).

    Also returns ``shuffled_fraction``: the mean share of patch positions actually shuffled (the
    block sampler often selects slightly fewer than ratio x N).
    """
    return shuffled_accuracies(model, batches, {0: draw}, device)[0]


@torch.inference_mode()
def prediction_consistencies(model: nn.Module, batches: Iterable[tuple[torch.Tensor, Any]],
                             draws: Sequence[JigsawDraw], device: torch.device | str = "cpu"
                             ) -> list[dict[str, float]]:
    """``prediction_consistency`` under each of ``draws`` in one pass; the original pass of a batch is
    shared by all of them."""
    distance = [0.0] * len(draws)
    agree = [0] * len(draws)
    seen = 0
    for images, _ in batches:
        x = images.to(device, non_blocking=True)
        tokens = model.forward_features(x)
        predicted = model.forward_head(tokens).argmax(1)
        for i, draw in enumerate(draws):
            jigsaw = draw(len(x))
            shuffled = tokens if jigsaw is None else shuffled_features(model, x, jigsaw.to(device))
            distance[i] += float((tokens[:, 0] - shuffled[:, 0]).float().norm(dim=1).sum())
            agree[i] += int((predicted == model.forward_head(shuffled).argmax(1)).sum())
        seen += len(x)
    return [{"l2": d / seen, "agreement": a / seen, "num_images": seen} for d, a in zip(distance, agree)]


def prediction_consistency(model: nn.Module, batches: Iterable[tuple[torch.Tensor, Any]],
                           draw: JigsawDraw, device: torch.device | str = "cpu") -> dict[str, float]:
    """Mean CLS-feature L2 distance and argmax agreement, original vs shuffled (official consistency.py).

    ``draw(rows)`` is called with the batch size: one independent shuffle per image, as the official
    script (which runs one image at a time). The original pass uses no mask and all PEs; the shuffled
    pass gives an MJP model the unknown PE at shuffled positions.
    """
    return prediction_consistencies(model, batches, [draw], device)[0]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1) over masks; the deviation is 0 for a single mask."""
    spread = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return float(np.mean(values)), spread


def _check_ratios(ratios: Sequence[float]) -> list[float]:
    ratios = [float(r) for r in ratios]
    keys = [ratio_key(r) for r in ratios]
    if not ratios or len(set(keys)) != len(keys):
        raise ConfigError(f"shuffle ratios {ratios}: need at least one, distinct at two decimals")
    for r in ratios:
        if not 0.0 <= r <= 1.0:
            raise ConfigError(f"shuffle ratio {r} is outside [0, 1]")
    return ratios


def check_shuffle_settings(ratios: Sequence[float], masks: int, consistency_ratio: float) -> list[float]:
    """The validated ratios; a ConfigError for a bad ratio, mask count or consistency ratio."""
    if isinstance(masks, bool) or not isinstance(masks, int) or masks < 1:
        raise ConfigError(f"evaluation.shuffle_masks: {masks!r}, expected a positive integer")
    _check_ratios([consistency_ratio])
    return _check_ratios(ratios)


def shuffle_metrics(model: nn.Module, device: torch.device, run: SupervisedRun, ratios: Sequence[float],
                    masks: int, consistency_ratio: float) -> dict[str, Any]:
    """The flat metrics ``evaluate_shuffle`` writes, for a loaded model (see there)."""
    ratios = check_shuffle_settings(ratios, masks, consistency_ratio)
    img, grid = run.model.img_size, run.model.grid_size
    loader = build_eval_loader(run.val_dir, run.recipe, img, run.num_classes, run.runtime.eval_batch_size,
                               run.runtime.num_workers, pin_memory=device.type == "cuda",
                               cache_images=run.runtime.cache_images)
    draws = {(ratio, m): mjp_draws(grid, ratio, mask_seed(run.seed, _SWEEP, ratio, m))
             for ratio in ratios for m in range(masks_at(ratio, masks))}
    with autocast(device, run.runtime.eval_amp):
        sweep = shuffled_accuracies(ShuffledForward(model), loader, draws, device)
    metrics: dict[str, Any] = {}
    for ratio in ratios:
        per_mask = [sweep[ratio, m] for m in range(masks_at(ratio, masks))]
        key = ratio_key(ratio)
        metrics[f"shuffled_top1_{key}"], metrics[f"shuffled_top1_{key}_std"] = mean_std(
            [acc["top1"] for acc in per_mask])
        metrics[f"shuffled_top5_{key}"] = mean_std([acc["top5"] for acc in per_mask])[0]
        metrics[f"shuffled_fraction_{key}"] = mean_std([acc["shuffled_fraction"] for acc in per_mask])[0]
    squashed = eval_loader(image_folder(run.val_dir, squash_transform(img)), run, device)
    consistency_draws = [mjp_draws(grid, consistency_ratio, mask_seed(run.seed, _CONSISTENCY, consistency_ratio, m))
                         for m in range(masks_at(consistency_ratio, masks))]
    with autocast(device, run.runtime.eval_amp):
        cons = prediction_consistencies(model, squashed, consistency_draws, device)
    metrics["consistency_l2"], metrics["consistency_l2_std"] = mean_std([c["l2"] for c in cons])
    metrics["consistency_agreement"], metrics["consistency_agreement_std"] = mean_std(
        [c["agreement"] for c in cons])
    metrics.update({
        "consistency_ratio": consistency_ratio,
        "shuffle_masks": masks,
        "num_images": per_mask[0]["num_images"],
        "eval_batch_size": run.runtime.eval_batch_size,
        "seed": run.seed,
        "scale": run.scale,
    })
    return metrics


def evaluate_shuffle(run: SupervisedRun, weights: Path, out_json: Path,
                     ratios: Sequence[float] = DEFAULT_RATIOS, consistency_ratio: float = CONSISTENCY_RATIO,
                     masks: int = 1, device: str | None = None) -> dict[str, Any]:
    """Shuffle-ratio sweep and consistency for ``weights`` under ``masks`` masks per ratio (1: the
    official single draw); writes one flat JSON atomically.

    Keys: ``shuffled_top1_rX.XX`` (mean over masks), ``shuffled_top1_rX.XX_std`` (over masks, ddof 1),
    ``shuffled_top5_rX.XX``, ``shuffled_fraction_rX.XX`` (means) per ratio; ``consistency_l2``,
    ``consistency_agreement`` (a fraction; means over masks, each with ``_std``), ``consistency_ratio``;
    ``shuffle_masks``, ``num_images``, ``eval_batch_size`` (the images sharing one mask in the sweep),
    ``seed``, ``scale``.
    """
    check_shuffle_settings(ratios, masks, consistency_ratio)
    model, dev = load_trained(run, weights, device)
    metrics = shuffle_metrics(model, dev, run, ratios, masks, consistency_ratio)
    write_json(out_json, metrics)
    return metrics
