"""Shared pieces of the evaluations: load a trained model, image folders, logits loops, top-k counts."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vitpe.runs import SupervisedRun
from vitpe.errors import DataError
from vitpe.models.weights import load_weights
from vitpe.train.distributed import resolve_device
from vitpe.runs import architecture_record
from vitpe.train.supervised import build_model


def load_trained(run: SupervisedRun, weights: Path, device: str | None = None) -> tuple[nn.Module, torch.device]:
    """The run's ViT with ``weights`` loaded (architecture checked against the metadata), in eval mode."""
    dev = torch.device(resolve_device(device))
    model = build_model(run)
    load_weights(model, Path(weights), expected=architecture_record(run))
    return model.to(dev).eval(), dev


def training_classes(run: SupervisedRun) -> list[str]:
    """The class folder names the model was trained on (ImageFolder order = logit order)."""
    root = Path(run.train_dir)
    if not root.is_dir():
        raise DataError(f"{root}: training image folder not found (its class folders define the logit order)")
    classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    if len(classes) != run.num_classes:
        raise DataError(f"{root}: {len(classes)} class folders, but the model has {run.num_classes} classes")
    return classes


def eval_loader(dataset: Dataset, run: SupervisedRun, device: torch.device) -> DataLoader:
    return DataLoader(dataset, batch_size=run.runtime.eval_batch_size, shuffle=False,
                      num_workers=run.runtime.num_workers, pin_memory=device.type == "cuda")


@dataclass
class TopKCounter:
    """Exact top-1 and top-k hit counts over batches (timm's ``accuracy`` returns per-batch percentages,
    which would need re-weighting); below k classes top-k is top-all (100 %)."""

    k: int = 5
    top1: int = 0
    topk: int = 0
    seen: int = 0

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        hits = logits.topk(min(self.k, logits.shape[1]), dim=1).indices.cpu() == targets[:, None]
        self.top1 += int(hits[:, 0].sum())
        self.topk += int(hits.any(dim=1).sum())
        self.seen += len(targets)

    def percent(self) -> dict[str, float]:
        """``top1`` and ``top<k>`` in percent (0 before any image)."""
        seen = max(self.seen, 1)
        return {"top1": 100.0 * self.top1 / seen, f"top{self.k}": 100.0 * self.topk / seen}


@torch.inference_mode()
def iterate_logits(model: nn.Module, loader: DataLoader, device: torch.device
                   ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(float32 logits on the CPU, targets) per batch of plain (unshuffled) images."""
    for images, targets in loader:
        yield model(images.to(device, non_blocking=True)).float().cpu(), targets
