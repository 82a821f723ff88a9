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

The official scripts seed nothing; here every draw comes from generators seeded by (params seed,
purpose, ratio), so the metrics are reproducible and adding a ratio leaves the others unchanged.
Ratio 0 means "not shuffled" (the official mask generator would read ratio <= 0 as 0.1).
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
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


def _stream_seed(seed: int, stream: int, ratio: float) -> int:
    return mix_seed(seed, stream, round(ratio * 10_000))


@torch.inference_mode()
def shuffled_accuracy(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                      draw: JigsawDraw, device: torch.device | str = "cpu") -> dict[str, float]:
    """Top-1/top-5 (%) with one jigsaw per batch, shared by its images (official eval.py); ``model(images,
    jigsaw)`` classifies shuffled input (a ViT inside vitpe.mjp.forward.ShuffledForward).

    Also returns ``shuffled_fraction``: the mean share of patch positions actually shuffled (the
    block sampler often selects slightly fewer than ratio x N).
    """
    counts = TopKCounter(k=5)
    shuffled = 0.0
    for images, targets in batches:
        jigsaw = draw(1)
        jigsaw = None if jigsaw is None else jigsaw.to(device)
        counts.update(model(images.to(device, non_blocking=True), jigsaw), targets)
        if jigsaw is not None and jigsaw.unk is not None:
            shuffled += float(jigsaw.unk.float().mean()) * len(targets)
    return {**counts.percent(), "num_images": counts.seen, "shuffled_fraction": shuffled / counts.seen}


@torch.inference_mode()
def prediction_consistency(model: nn.Module, batches: Iterable[tuple[torch.Tensor, Any]],
                           draw: JigsawDraw, device: torch.device | str = "cpu") -> dict[str, float]:
    """Mean CLS-feature L2 distance and argmax agreement, original vs shuffled (official consistency.py).

    ``draw(rows)`` is called with the batch size: one independent shuffle per image, as the official
    script (which runs one image at a time). The original pass uses no mask and all PEs; the shuffled
    pass gives an MJP model the unknown PE at shuffled positions.
    """
    distance = 0.0
    agree = seen = 0
    for images, _ in batches:
        x = images.to(device, non_blocking=True)
        jigsaw = draw(len(x))
        tokens = model.forward_features(x)
        shuffled = tokens if jigsaw is None else shuffled_features(model, x, jigsaw.to(device))
        distance += float((tokens[:, 0] - shuffled[:, 0]).float().norm(dim=1).sum())
        same = model.forward_head(tokens).argmax(1) == model.forward_head(shuffled).argmax(1)
        agree += int(same.sum())
        seen += len(x)
    return {"l2": distance / seen, "agreement": agree / seen, "num_images": seen}


def _check_ratios(ratios: Sequence[float]) -> list[float]:
    ratios = [float(r) for r in ratios]
    keys = [ratio_key(r) for r in ratios]
    if not ratios or len(set(keys)) != len(keys):
        raise ConfigError(f"shuffle ratios {ratios}: need at least one, distinct at two decimals")
    for r in ratios:
        if not 0.0 <= r <= 1.0:
            raise ConfigError(f"shuffle ratio {r} is outside [0, 1]")
    return ratios


def evaluate_shuffle(run: SupervisedRun, weights: Path, out_json: Path,
                     ratios: Sequence[float] = DEFAULT_RATIOS, consistency_ratio: float = CONSISTENCY_RATIO,
                     device: str | None = None) -> dict[str, Any]:
    """Shuffle-ratio sweep and consistency for ``weights``; writes one flat JSON atomically.

    Keys: ``shuffled_top1_rX.XX``, ``shuffled_top5_rX.XX``, ``shuffled_fraction_rX.XX`` per ratio;
    ``consistency_l2``, ``consistency_agreement`` (a fraction), ``consistency_ratio``; ``num_images``,
    ``eval_batch_size`` (the images sharing one mask in the sweep), ``seed``, ``scale``.
    """
    ratios = _check_ratios(ratios)
    _check_ratios([consistency_ratio])
    img = run.model.img_size
    grid = run.model.grid_size
    model, dev = load_trained(run, weights, device)
    loader = build_eval_loader(run.val_dir, run.recipe, img, run.num_classes, run.runtime.eval_batch_size,
                               run.runtime.num_workers,
                               pin_memory=dev.type == "cuda")
    metrics: dict[str, Any] = {}
    for ratio in ratios:
        acc = shuffled_accuracy(ShuffledForward(model), loader,
                                mjp_draws(grid, ratio, _stream_seed(run.seed, _SWEEP, ratio)), dev)
        key = ratio_key(ratio)
        metrics[f"shuffled_top1_{key}"] = acc["top1"]
        metrics[f"shuffled_top5_{key}"] = acc["top5"]
        metrics[f"shuffled_fraction_{key}"] = acc["shuffled_fraction"]
    squashed = eval_loader(image_folder(run.val_dir, squash_transform(img)), run, dev)
    draw = mjp_draws(grid, consistency_ratio, _stream_seed(run.seed, _CONSISTENCY, consistency_ratio))
    cons = prediction_consistency(model, squashed, draw, dev)
    metrics.update({
        "consistency_ratio": consistency_ratio,
        "consistency_l2": cons["l2"],
        "consistency_agreement": cons["agreement"],
        "num_images": acc["num_images"],
        "eval_batch_size": run.runtime.eval_batch_size,
        "seed": run.seed,
        "scale": run.scale,
    })
    write_json(out_json, metrics)
    return metrics
