"""Pretraining metrics: the masked-patch loss on held-out images with seeded masks, and the training log.

The validation loss runs the pretrained model as trained (AdPE's δ included) on the validation
ImageFolder, each image resized and centre-cropped to the pretraining input size, with one mask per
image drawn from a fixed seed, so MAE+, AdPE and their ablations are compared on identical masks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from vitpe.data.transforms import eval_transform
from vitpe.runs import PretrainRun, architecture_record
from vitpe.io import write_json
from vitpe.train.pretrain import build_autoencoder
from vitpe.models.weights import load_weights
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
def pretext_metrics(run: PretrainRun, weights: Path, log: Path, val_dir: Path, batch_size: int = 200,
                    device: str | None = None) -> dict[str, Any]:
    """{"val_loss", "num_images", "scale", "method", the training-log summary, the adversary's norm and ε}."""
    dev = torch.device(resolve_device(device))
    model = build_autoencoder(run)
    load_weights(model, Path(weights), expected=architecture_record(run))
    model = model.to(dev).eval()
    transform = eval_transform(run.model.img_size, crop_pct=1.0)  # the short side resized to the crop
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
        metrics.update(adv_norm=run.adversary.norm, adv_eps=run.adversary.eps)
    return metrics


def evaluate_pretext(run: PretrainRun, weights: Path, log: Path, val_dir: Path, out_json: Path,
                     batch_size: int = 200, device: str | None = None) -> dict[str, Any]:
    """:func:`pretext_metrics`, written to ``out_json`` atomically (only on success)."""
    metrics = pretext_metrics(run, weights, log, val_dir, batch_size, device)
    write_json(out_json, metrics)
    return metrics
