"""Top-1/top-5 accuracy on the validation ImageFolder (Resize + CenterCrop, official test transform)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from vitpe.config import SupervisedRun
from vitpe.io import write_json
from vitpe.evaluate.common import load_trained
from vitpe.train.data import build_eval_loader


@torch.no_grad()
def evaluate_classification(run: SupervisedRun, weights: Path, out_json: Path,
                            device: str | None = None) -> dict[str, Any]:
    """Evaluate ``weights`` (timm-keyed safetensors) on ``run.val_dir``; write and return the metrics.

    JSON: {"top1", "top5" (percent), "num_images", "scale"}; written atomically, only on success.
    Raises CheckpointError / DataError for missing or mismatched inputs.
    """
    model, dev = load_trained(run, weights, device)
    loader = build_eval_loader(run.val_dir, run.recipe, run.model["img_size"], run.num_classes,
                               run.recipe["eval_batch_size"], pin_memory=dev.type == "cuda")
    k = min(5, run.num_classes)  # with fewer than 5 classes top-5 is top-all (100%)
    # exact hit counts (timm's accuracy() returns per-batch percentages, which would need re-weighting)
    top1 = top5 = seen = 0
    for images, targets in loader:
        logits = model(images.to(dev, non_blocking=True))
        hits = logits.topk(k, dim=1).indices.cpu() == targets[:, None]
        top1 += int(hits[:, 0].sum())
        top5 += int(hits.any(dim=1).sum())
        seen += len(targets)
    metrics = {
        "top1": 100.0 * top1 / seen,
        "top5": 100.0 * top5 / seen,
        "num_images": seen,
        "scale": run.scale,
    }
    write_json(out_json, metrics)
    return metrics
