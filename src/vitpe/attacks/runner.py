"""One trained model through every configured attack: settings from params.yaml, the attack images,
the client steps, per-image metrics, aggregates, and the reconstructions for the figures."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from vitpe.attacks import metrics as M
from vitpe.attacks.april import april_closed_form
from vitpe.attacks.april_adaptive import april_adaptive
from vitpe.attacks.gradvit import NO_PRIOR, GradViTSettings, gradvit, load_image_prior
from vitpe.attacks.inverting_gradients import IGSettings, inverting_gradients
from vitpe.attacks.threat import (ThreatModel, attacker_labels, box_bounds, client_update, denormalize,
                                  detect_unknown_rows, prepare_model, takes_mask)
from vitpe.config import SupervisedRun, dataset_paths
from vitpe.errors import ConfigError, DataError
from vitpe.io import atomic_path, write_json

CLOSED_FORM = ("april", "april_adaptive")
OPTIMISATION = ("inverting_gradients", "gradvit")
KINDS = ("supervised", "april", "finetuned")
ROW_METRICS = ("mse", "psnr", "ssim", "fft2d", "lpips", "psnr_fed", "ssim_fed", "psnr_kept", "psnr_shuffled",
               "pos_acc", "pos_disp", "perm_psnr", "label_ok", "objective", "seconds")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".JPEG", ".bmp"}


@dataclass(frozen=True)
class AttackSettings:
    threat: ThreatModel
    clients: tuple[str, ...]
    images: int
    ig: IGSettings
    gradvit: GradViTSettings
    april: dict[str, Any]
    metrics: dict[str, Any]
    seed: int
    images_dir: Path
    lists: dict[str, list[str]] = field(default_factory=dict)

    def attacks_for(self, kind: str) -> tuple[str, ...]:
        return tuple(self.lists["closed_form"] if kind == "april" else self.lists["optimisation"])


def attack_settings(params: dict, images: int | None = None, iterations: int | None = None) -> AttackSettings:
    """The resolved ``attacks:`` section for the active scale (``images``/``iterations`` override it)."""
    if "attacks" not in params:
        raise ConfigError("params.yaml: no attacks: section")
    cfg = params["attacks"]
    scale = params["scales"][params["scale"]].get("attacks")
    if scale is None:
        raise ConfigError(f"params.yaml: scales.{params['scale']}.attacks is missing (images, iterations)")
    its = dict(scale["iterations"])
    if iterations is not None:
        its = {k: iterations for k in its}
    for name in cfg["models"] + cfg["april_models"]:
        if name not in params["supervised"]:
            raise ConfigError(f"params.yaml: attacks lists unknown supervised experiment {name!r}")
    for name in cfg["april_models"]:
        if not params["supervised"][name].get("april"):
            raise ConfigError(f"params.yaml: attacks.april_models: supervised.{name} is not APRIL-compatible "
                              "(set april: true)")
    gv = dict(cfg["gradvit"])
    gv["alpha_grad"], gv["alpha_image"] = tuple(gv["alpha_grad"]), tuple(gv["alpha_image"])
    images_dir = cfg.get("images_dir")
    if images_dir is None:
        paths = dataset_paths(params)
        images_dir = paths.get("attack", paths["imagenet"] / "val")
    return AttackSettings(
        threat=ThreatModel.from_params(cfg["threat"]),
        clients=tuple(cfg["client"]),
        images=images if images is not None else scale["images"],
        ig=IGSettings(iterations=its["inverting_gradients"], **cfg["inverting_gradients"]),
        gradvit=GradViTSettings(iterations=its["gradvit"], **gv),
        april=dict(cfg["april"]),
        metrics=dict(cfg["metrics"]),
        seed=params["seed"],
        images_dir=Path(images_dir),
        lists={"closed_form": list(cfg["closed_form"]), "optimisation": list(cfg["optimisation"])},
    )


def attack_images(root: Path, classes: list[str], count: int,
                  transform) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``count`` images of ``root/<class>/*`` (evenly spread over the sorted files), normalised, with
    labels indexed by the training classes (the attack set may cover only some of them)."""
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: attack image folder not found")
    index = {name: i for i, name in enumerate(classes)}
    files = sorted((d.name, f) for d in root.iterdir() if d.is_dir() for f in sorted(d.iterdir())
                   if f.suffix in IMAGE_SUFFIXES)
    unknown = sorted({c for c, _ in files} - set(index))
    if unknown:
        raise DataError(f"{root}: class folder {unknown[0]!r} is not a training class")
    if not files:
        raise DataError(f"{root}: no images")
    picks = np.unique(np.linspace(0, len(files) - 1, num=min(count, len(files))).round().astype(int))
    images, labels, names = [], [], []
    for i in picks:
        cls, path = files[i]
        with Image.open(path) as img:
            images.append(transform(img.convert("RGB")))
        labels.append(index[cls])
        names.append(f"{cls}/{path.name}")
    return torch.stack(images), torch.tensor(labels), names


@torch.no_grad()
def clean_top1(model: nn.Module, run: SupervisedRun, device: torch.device) -> float:
    from vitpe.train.data import build_eval_loader

    loader = build_eval_loader(run.val_dir, run.recipe, run.model["img_size"], run.num_classes,
                               run.recipe["eval_batch_size"])
    hits = seen = 0
    for images, targets in loader:
        hits += int((model(images.to(device)).argmax(dim=1).cpu() == targets).sum())
        seen += len(targets)
    return 100.0 * hits / max(seen, 1)


def _run_attack(name: str, model: nn.Module, update, labels, settings: AttackSettings, box, seed: int,
                patch: int, prior, mask) -> tuple[torch.Tensor, float, dict]:
    shape = tuple(update.fed.shape)
    dal = update.dal_weight if mask is not None else 0.0
    if name == "april":
        result = april_closed_form(model, update, settings.april["known_cls"], settings.april["solver"],
                                   settings.april["rcond"])
        return result.images, float("nan"), result.info
    if name == "april_adaptive":
        result = april_adaptive(model, update, settings.april["known_cls"], settings.april["solver"],
                                settings.april["use_unk_row"], rcond=settings.april["rcond"])
        return result.images, float("nan"), result.info
    if name == "inverting_gradients":
        result = inverting_gradients(model, update.gradients, labels, shape, box, settings.ig, seed, mask, dal)
        return result.images, result.objective, result.info
    if name == "gradvit":
        result = gradvit(model, update.gradients, labels, shape, box, settings.gradvit, seed, patch, prior, mask, dal)
        return result.images, result.objective, result.info
    raise ConfigError(f"unknown attack {name!r} (known: {', '.join(CLOSED_FORM + OPTIMISATION)})")


def run_attacks(model: nn.Module, run: SupervisedRun, kind: str, settings: AttackSettings, device: torch.device,
                out_metrics: Path, out_table: Path, out_recon: Path, dal_weight: float = 0.0,
                log=print) -> dict[str, Any]:
    """Attack ``model`` on the attack images in every client mode; write metrics JSON, the per-image
    CSV and the reconstructions (safetensors, [0, 1] images)."""
    from safetensors.torch import save_file
    from vitpe.train.data import eval_transform

    if kind not in KINDS:
        raise ConfigError(f"unknown model kind {kind!r} (known: {', '.join(KINDS)})")
    start = time.perf_counter()
    model = prepare_model(model)
    attacks = settings.attacks_for(kind)
    skipped = {}
    if settings.threat.batch_size > 1:  # APRIL reads dL/dz off the PE gradient: one image only (§4.2)
        skipped = {a: f"needs batch size 1, threat.batch_size is {settings.threat.batch_size}"
                   for a in attacks if a in CLOSED_FORM}
        attacks = tuple(a for a in attacks if a not in skipped)
    patch, img = run.model["patch_size"], run.model["img_size"]
    from vitpe.evaluate.common import training_classes

    images, labels, names = attack_images(settings.images_dir, training_classes(run), settings.images,
                                          eval_transform(run.recipe, img))
    images, labels = images.to(device), labels.to(device)
    mean, std = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    box = box_bounds(mean, std, device)
    prior, prior_status, prior_reason = (None, "unused", "")
    if "gradvit" in attacks:
        prior, prior_status, prior_reason = load_image_prior(settings.gradvit.image_prior,
                                                             settings.gradvit.image_prior_arch)
        if prior is not None:
            prior = prior.to(device)
    lpips = M.Lpips(settings.metrics.get("lpips_alexnet"))
    batch = settings.threat.batch_size
    rows: list[dict[str, Any]] = []
    recon: dict[str, torch.Tensor] = {"original": denormalize(images, mean, std).float().cpu()}
    for mode in settings.clients:
        fed_all, rec_all, shuffled_all = {}, {a: [] for a in attacks}, []
        for first in range(0, len(images), batch):
            x, y = images[first:first + batch], labels[first:first + batch]
            seed = settings.seed + first
            update = client_update(model, x, y, mode, settings.threat, patch, seed, dal_weight)
            guess = attacker_labels(update, settings.threat, model)
            detected = detect_unknown_rows(update, model) if settings.threat.attacker_mask == "detected" else None
            mask = detected if (detected is not None and takes_mask(model)) else None
            original01, fed01 = denormalize(x, mean, std), denormalize(update.fed, mean, std)
            fed_all.setdefault("fed", []).append(fed01.float().cpu())
            n = (img // patch) ** 2
            shuffled_all.append((update.shuffled if update.shuffled is not None else torch.zeros(n, dtype=torch.bool))
                                .cpu().expand(len(x), -1))
            for attack in attacks:
                t0 = time.perf_counter()
                rec, objective, info = _run_attack(attack, model, update, guess, settings, box, seed, patch,
                                                   prior, mask)
                rec01 = denormalize(rec.to(device).float(), mean, std)
                if len(x) > 1:
                    rec01 = M.match_order(rec01, fed01)
                rec_all[attack].append(rec01.float().cpu())
                per_image = M.image_rows(rec01.cpu(), original01.cpu(), fed01.cpu(), patch, update.shuffled, lpips)
                seconds = time.perf_counter() - t0
                for i, values in enumerate(per_image):
                    rows.append({"image": names[first + i], "label": int(y[i]), "attack": attack, "mode": mode,
                                 **values, "label_ok": float(sorted(guess.tolist()) == sorted(y.tolist())),
                                 "objective": objective, "seconds": seconds / len(x),
                                 "n_shuffled": int(update.shuffled.sum()) if update.shuffled is not None else 0,
                                 "n_detected": int(detected.sum()) if detected is not None else 0,
                                 **{f"info_{k}": v for k, v in info.items() if isinstance(v, (int, float, bool))}})
                log(f"{run.name} {mode} {names[first]} {attack}: PSNR {per_image[0]['psnr']:.2f} dB "
                    f"({seconds:.1f} s)")
        recon[f"fed/{mode}"] = torch.cat(fed_all["fed"])
        recon[f"shuffled/{mode}"] = torch.cat(shuffled_all).to(torch.uint8)
        for attack in attacks:
            recon[f"{attack}/{mode}"] = torch.cat(rec_all[attack])
    table = pd.DataFrame(rows, columns=None if rows else ["image", "label", "attack", "mode"])
    summary = M.aggregate(table, [m for m in ROW_METRICS if m in table], settings.metrics["success_psnr"])
    summary.update({f"{a}_skipped": reason for a, reason in skipped.items()})
    summary.update({
        "experiment": run.name, "scale": run.scale, "kind": kind, "attacks": ",".join(attacks),
        "clients": ",".join(settings.clients), "num_images": len(images), "seed": settings.seed,
        "clean_top1": clean_top1(model, run, device),
        "threat_batch_size": settings.threat.batch_size, "threat_labels": settings.threat.labels,
        "threat_model_mode": "eval", "threat_shuffle_ratio": settings.threat.shuffle_ratio,
        "threat_dal_loss": str(settings.threat.dal_loss).lower(), "threat_attacker_mask": settings.threat.attacker_mask,
        "threat_dal_weight": dal_weight,
        "lpips": lpips.status, "lpips_reason": lpips.reason,
        "success_psnr_threshold": settings.metrics["success_psnr"],
        "seconds": time.perf_counter() - start,
    })
    if "inverting_gradients" in attacks:
        summary.update(ig_iterations=settings.ig.iterations, ig_restarts=settings.ig.restarts, ig_lr=settings.ig.lr,
                       ig_tv=settings.ig.tv)
    if "gradvit" in attacks:
        summary.update(gradvit_iterations=settings.gradvit.iterations, gradvit_match=settings.gradvit.match,
                       gradvit_image_prior=prior_status, gradvit_image_prior_reason=prior_reason,
                       gradvit_variant="GradViT" if prior is not None else NO_PRIOR)
    if set(attacks) & set(CLOSED_FORM):
        summary.update(april_known_cls=str(settings.april["known_cls"]).lower(), april_solver=settings.april["solver"],
                       april_rcond=str(settings.april["rcond"]))
    with atomic_path(out_table) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(out_recon) as tmp:
        save_file({k: v.contiguous() for k, v in recon.items()}, str(tmp),
                  metadata={"vitpe": json.dumps({"experiment": run.name, "kind": kind, "images": names,
                                                 "attacks": list(attacks), "clients": list(settings.clients),
                                                 "patch_size": patch}, sort_keys=True)})
    write_json(out_metrics, summary)
    return summary
