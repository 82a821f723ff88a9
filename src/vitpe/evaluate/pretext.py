"""Pretraining metrics: the masked-patch loss on held-out images with seeded masks, and the training log.

The validation loss runs the pretrained model as trained (AdPE's δ included) on the validation
ImageFolder, each image resized and centre-cropped to the pretraining input size, with one mask per
image drawn from a fixed seed, so MAE+, AdPE and their ablations are compared on identical masks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import DataLoader
from torchvision import transforms as T

from vitpe.config import PretrainRun
from vitpe.io import write_json
from vitpe.mae.pretrain import build_autoencoder
from vitpe.train.checkpoint import load_weights
from vitpe.train.data import image_folder
from vitpe.train.distributed import resolve_device
from vitpe.train.progress import read_log

MASK_SEED = 20230314  # fixed: every model sees the same validation masks


def _log_summary(log: Path) -> dict[str, float]:
    """First-step loss, mean loss over the last epoch, steps, and the final ‖δ‖ (AdPE)."""
    records = read_log(log)
    window = [r for r in records if r["epoch"] == records[-1]["epoch"]]
    out = {"train_loss_first": records[0]["loss"], "train_loss_last_epoch": sum(r["loss"] for r in window) / len(window),
           "steps": records[-1]["step"]}
    for key in ("adv_l2", "adv_linf"):
        if key in records[-1]:
            out[f"final_{key}"] = records[-1][key]
    return out


@torch.no_grad()
def evaluate_pretext(run: PretrainRun, weights: Path, log: Path, val_dir: Path, out_json: Path,
                     batch_size: int = 200, device: str | None = None) -> dict[str, Any]:
    dev = torch.device(resolve_device(device))
    model = build_autoencoder(run)
    load_weights(model, Path(weights), expected={"model": run.model, "rpe_config": run.rpe,
                                                 "adversary": run.adversary, "method": run.method})
    model = model.to(dev).eval()
    size = run.model["img_size"]
    transform = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                           T.ToTensor(), T.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)])
    loader = DataLoader(image_folder(val_dir, transform), batch_size=batch_size, shuffle=False)
    generator = torch.Generator().manual_seed(MASK_SEED)
    total = count = 0.0
    for images, _ in loader:
        noise = torch.rand(len(images), model.num_patches, generator=generator).to(dev)
        loss = model(images.to(dev), noise=noise)[0]
        total += float(loss) * len(images)
        count += len(images)
    metrics = {"val_loss": total / count, "num_images": int(count), "scale": run.scale,
               "method": run.method, **_log_summary(log)}
    if run.adversary is not None:
        metrics.update(adv_norm=run.adversary["norm"], adv_eps=run.adversary["eps"])
    write_json(out_json, metrics)
    return metrics
