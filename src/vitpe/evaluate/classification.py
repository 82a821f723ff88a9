"""Top-1/top-5 accuracy on the validation ImageFolder (Resize + CenterCrop, official test transform)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitpe.runs import SupervisedRun
from vitpe.io import write_json
from vitpe.evaluate.common import TopKCounter, load_trained
from vitpe.train.data import build_eval_loader
from vitpe.train.distributed import autocast


@torch.no_grad()
def classification_metrics(model: nn.Module, device: torch.device, run: SupervisedRun) -> dict[str, Any]:
    """{"top1", "top5" (percent), "num_images", "scale"} of a loaded model on ``run.val_dir``."""
    loader = build_eval_loader(run.val_dir, run.recipe, run.model.img_size, run.num_classes,
                               run.runtime.eval_batch_size, run.runtime.num_workers, pin_memory=device.type == "cuda",
                               cache_images=run.runtime.cache_images)
    counts = TopKCounter(k=5)
    with autocast(device, run.runtime.eval_amp):
        for images, targets in loader:
            counts.update(model(images.to(device, non_blocking=True)), targets)
    return {**counts.percent(), "num_images": counts.seen, "scale": run.scale}


def evaluate_classification(run: SupervisedRun, weights: Path, out_json: Path,
                            device: str | None = None) -> dict[str, Any]:
    """Evaluate ``weights`` (timm-keyed safetensors) on ``run.val_dir``; write and return the metrics.

    JSON: {"top1", "top5" (percent), "num_images", "scale"}; written atomically, only on success.
    Raises CheckpointError / DataError for missing or mismatched inputs.
    """
    model, dev = load_trained(run, weights, device)
    metrics = classification_metrics(model, dev, run)
    write_json(out_json, metrics)
    return metrics
