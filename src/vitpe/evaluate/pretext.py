"""Pretraining metrics: the masked-patch loss on held-out images with seeded masks, and the training log.

The validation loss runs the pretrained model as trained (AdPE's δ included) on the validation
ImageFolder, each image resized and centre-cropped to the pretraining input size, with one mask per
image drawn from a fixed seed, so MAE+, AdPE and their ablations are compared on identical masks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vitpe.runs import PretrainRun, architecture_record
from vitpe.io import write_json
from vitpe.train.pretrain import build_autoencoder, held_out_loss
from vitpe.models.weights import load_weights
from vitpe.train.distributed import resolve_device
from vitpe.train.progress import read_log


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


def pretext_metrics(run: PretrainRun, weights: Path, log: Path, val_dir: Path, batch_size: int = 200,
                    device: str | None = None) -> dict[str, Any]:
    """{"val_loss", "num_images", "scale", "method", the training-log summary, the adversary's norm and ε}."""
    dev = torch.device(resolve_device(device))
    model = build_autoencoder(run)
    load_weights(model, Path(weights), expected=architecture_record(run))
    loss, count = held_out_loss(model.to(dev).eval(), val_dir, run.model.img_size, dev, batch_size)
    metrics = {"val_loss": loss, "num_images": count, "scale": run.scale, "method": run.method, **_log_summary(log)}
    if run.adversary is not None:
        metrics.update(adv_norm=run.adversary.norm, adv_eps=run.adversary.eps)
    return metrics


def evaluate_pretext(run: PretrainRun, weights: Path, log: Path, val_dir: Path, out_json: Path,
                     batch_size: int = 200, device: str | None = None) -> dict[str, Any]:
    """:func:`pretext_metrics`, written to ``out_json`` atomically (only on success)."""
    metrics = pretext_metrics(run, weights, log, val_dir, batch_size, device)
    write_json(out_json, metrics)
    return metrics
