"""Shared pieces of the evaluations: load a trained model, image folders, transforms, logits loops."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from vitpe.config import SupervisedRun
from vitpe.errors import DataError
from vitpe.train.checkpoint import load_weights
from vitpe.train.distributed import resolve_device
from vitpe.train.supervised import architecture_metadata, build_model


def load_trained(run: SupervisedRun, weights: Path, device: str | None = None) -> tuple[nn.Module, torch.device]:
    """The run's ViT with ``weights`` loaded (architecture checked against the metadata), in eval mode."""
    dev = torch.device(resolve_device(device))
    model = build_model(run)
    load_weights(model, Path(weights),
                 expected={"model": run.model, "pos_embed": run.pos_embed, "num_classes": run.num_classes,
                           **architecture_metadata(run)})
    return model.to(dev).eval(), dev


def _normalize() -> list:
    return [T.ToTensor(), T.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)]


def center_crop_transform(img_size: int) -> T.Compose:
    """Hendrycks' ImageNet-C test transform: the sets are already Resize+CenterCrop'ed, so crop only."""
    return T.Compose([T.CenterCrop(img_size), *_normalize()])


def squash_transform(img_size: int) -> T.Compose:
    """Official consistency.py: Resize((img, img)) bicubic, no crop (the aspect ratio is not kept)."""
    return T.Compose([T.Resize((img_size, img_size), interpolation=T.InterpolationMode.BICUBIC), *_normalize()])


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
    return DataLoader(dataset, batch_size=run.recipe["eval_batch_size"], shuffle=False,
                      num_workers=run.recipe["num_workers"], pin_memory=device.type == "cuda")


@torch.inference_mode()
def iterate_logits(model: nn.Module, loader: DataLoader, device: torch.device
                   ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(float32 logits on the CPU, targets) per batch of plain (unshuffled) images."""
    for images, targets in loader:
        yield model(images.to(device, non_blocking=True)).float().cpu(), targets
