"""One trained model through every configured attack: settings from params.yaml, the attack images
(one job's share of them), the client steps, per-image metrics, aggregates, and the reconstructions
for the figures. The optimisation attacks run ``chunk`` client batches per objective (matching.py)."""
from __future__ import annotations

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
from vitpe.attacks.budget import OPTIMISATION, job_ranges, jobs_for
from vitpe.attacks.gradvit import NO_PRIOR, GradViTSettings, gradvit_batch, load_image_prior
from vitpe.attacks.inverting_gradients import IGSettings, inverting_gradients_batch
from vitpe.attacks.matching import InversionTask, group_tasks
from vitpe.attacks.outputs import summarise, write_outputs
from vitpe.attacks.threat import (ClientUpdate, ThreatModel, attacker_labels, box_bounds, client_update, denormalize,
                                  detect_unknown_rows, prepare_model, takes_mask)
from vitpe.config import SupervisedRun, dataset_paths
from vitpe.errors import ConfigError, DataError

CLOSED_FORM = ("april", "april_adaptive")
KINDS = ("supervised", "april", "finetuned")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".JPEG", ".bmp"}


@dataclass(frozen=True)
class AttackSettings:
    threat: ThreatModel
    clients: tuple[str, ...]
    images: int
    chunk: int  # client batches optimised in one objective (matching.py); 1: each alone
    jobs: int  # jobs the attack images are split into, at most one per client batch (budget.jobs_for)
    ig: IGSettings
    gradvit: GradViTSettings
    april: dict[str, Any]
    metrics: dict[str, Any]
    seed: int
    images_dir: Path
    lists: dict[str, list[str]] = field(default_factory=dict)

    def jobs_for(self, kind: str) -> int:
        return jobs_for(kind, self.jobs, self.images, self.threat.batch_size)

    def attacks_for(self, kind: str) -> tuple[str, ...]:
        return tuple(self.lists["closed_form"] if kind == "april" else self.lists["optimisation"])


def attack_settings(params: dict, images: int | None = None, iterations: int | None = None,
                    jobs: int | None = None) -> AttackSettings:
    """The resolved ``attacks:`` section for the active scale (``images``/``iterations``/``jobs`` override it)."""
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
        chunk=scale.get("chunk", 1),
        jobs=jobs if jobs is not None else scale.get("jobs", 1),
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


@dataclass
class _Case:
    """One client batch of one client mode: the update the server saw and what the attacker derives."""

    first: int  # global index of its first image (the seed offset, as in a single job)
    update: ClientUpdate
    guess: torch.Tensor  # the attacker's labels
    detected: torch.Tensor | None  # zero PE-gradient rows
    mask: torch.Tensor | None  # the mask the attacker feeds the model (detected, if the model takes one)

    def task(self, seed: int) -> InversionTask:
        dal = self.update.dal_weight if self.mask is not None else 0.0
        return InversionTask(self.update.gradients, self.guess, tuple(self.update.fed.shape), seed + self.first,
                             self.mask, dal)


def _closed_form(name: str, model: nn.Module, case: _Case,
                 settings: AttackSettings) -> tuple[torch.Tensor, float, dict]:
    april = settings.april
    if name == "april":
        result = april_closed_form(model, case.update, april["known_cls"], april["solver"], april["rcond"])
    else:
        result = april_adaptive(model, case.update, april["known_cls"], april["solver"], april["use_unk_row"],
                                rcond=april["rcond"])
    return result.images, float("nan"), result.info


def _optimise(name: str, model: nn.Module, cases: list[_Case], settings: AttackSettings, box, patch: int,
              prior) -> list[tuple[torch.Tensor, float, dict]]:
    """One optimisation attack on every case, ``settings.chunk`` cases per objective."""
    tasks = [case.task(settings.seed) for case in cases]
    results: list = [None] * len(tasks)
    for group in group_tasks(model, tasks, settings.chunk):
        picked = [tasks[i] for i in group]
        if name == "inverting_gradients":
            out = inverting_gradients_batch(model, picked, box, settings.ig)
        else:
            out = gradvit_batch(model, picked, box, settings.gradvit, patch, prior)
        for i, result in zip(group, out):
            results[i] = (result.images, result.objective, result.info)
    return results


def run_attacks(model: nn.Module, run: SupervisedRun, kind: str, settings: AttackSettings, device: torch.device,
                out_metrics: Path, out_table: Path, out_recon: Path, dal_weight: float = 0.0,
                log=print, job: int = 0) -> dict[str, Any]:
    """Attack ``model`` on job ``job``'s share of the attack images (budget.job_ranges) in every client
    mode; write metrics JSON, the per-image CSV and the reconstructions (safetensors, [0, 1] images)."""
    from vitpe.evaluate.common import training_classes
    from vitpe.train.data import eval_transform

    if kind not in KINDS:
        raise ConfigError(f"unknown model kind {kind!r} (known: {', '.join(KINDS)})")
    jobs = settings.jobs_for(kind)
    if not 0 <= job < jobs:
        raise ConfigError(f"attack job {job} does not exist: {run.name} ({kind}) runs as {jobs} job(s)")
    start = time.perf_counter()
    model = prepare_model(model)
    attacks = settings.attacks_for(kind)
    skipped = {}
    if settings.threat.batch_size > 1:  # APRIL reads dL/dz off the PE gradient: one image only
        skipped = {a: f"needs batch size 1, threat.batch_size is {settings.threat.batch_size}"
                   for a in attacks if a in CLOSED_FORM}
        attacks = tuple(a for a in attacks if a not in skipped)
    unknown = [a for a in attacks if a not in CLOSED_FORM + OPTIMISATION]
    if unknown:
        raise ConfigError(f"unknown attack {unknown[0]!r} (known: {', '.join(CLOSED_FORM + OPTIMISATION)})")
    patch, img = run.model["patch_size"], run.model["img_size"]
    images, labels, names = attack_images(settings.images_dir, training_classes(run), settings.images,
                                          eval_transform(run.recipe, img))
    batch = settings.threat.batch_size
    share = job_ranges(len(images), batch, jobs)[job]
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
    rows: dict[tuple[int, int, int], dict[str, Any]] = {}  # (mode, image, attack) -> row: the table's order
    recon: dict[str, torch.Tensor] = {"original": denormalize(images[share.start:share.stop], mean, std).float().cpu()}
    n = (img // patch) ** 2
    starts = list(range(share.start, share.stop, batch))
    for m, mode in enumerate(settings.clients):
        fed_all, shuffled_all, rec_all = [], [], {a: [] for a in attacks}
        for chunk_start in range(0, len(starts), settings.chunk):
            cases = []
            for first in starts[chunk_start:chunk_start + settings.chunk]:
                x, y = images[first:first + batch], labels[first:first + batch]
                update = client_update(model, x, y, mode, settings.threat, patch, settings.seed + first, dal_weight)
                detected = detect_unknown_rows(update, model) if settings.threat.attacker_mask == "detected" else None
                mask = detected if (detected is not None and takes_mask(model)) else None
                cases.append(_Case(first, update, attacker_labels(update, settings.threat, model), detected, mask))
                fed_all.append(denormalize(update.fed, mean, std).float().cpu())
                shuffled_all.append((update.shuffled if update.shuffled is not None
                                     else torch.zeros(n, dtype=torch.bool)).cpu().expand(len(x), -1))
            for a, attack in enumerate(attacks):
                t0 = time.perf_counter()
                if attack in CLOSED_FORM:
                    results = [_closed_form(attack, model, case, settings) for case in cases]
                else:
                    results = _optimise(attack, model, cases, settings, box, patch, prior)
                seconds = (time.perf_counter() - t0) / sum(len(case.update.labels) for case in cases)
                for case, (rec, objective, info) in zip(cases, results):
                    y = case.update.labels
                    original01 = denormalize(images[case.first:case.first + len(y)], mean, std)
                    fed01 = denormalize(case.update.fed, mean, std)
                    rec01 = denormalize(rec.to(device).float(), mean, std)
                    if len(y) > 1:
                        rec01 = M.match_order(rec01, fed01)
                    rec_all[attack].append(rec01.float().cpu())
                    per_image = M.image_rows(rec01.cpu(), original01.cpu(), fed01.cpu(), patch, case.update.shuffled,
                                             lpips)
                    label_ok = float(sorted(case.guess.tolist()) == sorted(y.tolist()))
                    for i, values in enumerate(per_image):
                        rows[(m, case.first + i, a)] = {
                            "image": names[case.first + i], "label": int(y[i]), "attack": attack, "mode": mode,
                            **values, "label_ok": label_ok, "objective": objective, "seconds": seconds,
                            "n_shuffled": int(case.update.shuffled.sum()) if case.update.shuffled is not None else 0,
                            "n_detected": int(case.detected.sum()) if case.detected is not None else 0,
                            **{f"info_{k}": v for k, v in info.items() if isinstance(v, (int, float, bool))}}
                    log(f"{run.name} {mode} {names[case.first]} {attack}: PSNR {per_image[0]['psnr']:.2f} dB "
                        f"({seconds:.1f} s per image)")
        recon[f"fed/{mode}"] = torch.cat(fed_all)
        recon[f"shuffled/{mode}"] = torch.cat(shuffled_all).to(torch.uint8)
        for attack in attacks:
            recon[f"{attack}/{mode}"] = torch.cat(rec_all[attack])
    table = pd.DataFrame([rows[k] for k in sorted(rows)],
                         columns=None if rows else ["image", "label", "attack", "mode"])
    fields = {f"{a}_skipped": reason for a, reason in skipped.items()}
    fields.update({
        "experiment": run.name, "scale": run.scale, "kind": kind, "attacks": ",".join(attacks),
        "clients": ",".join(settings.clients), "num_images": len(share), "seed": settings.seed,
        "clean_top1": clean_top1(model, run, device),
        "threat_batch_size": settings.threat.batch_size, "threat_labels": settings.threat.labels,
        "threat_model_mode": "eval", "threat_shuffle_ratio": settings.threat.shuffle_ratio,
        "threat_dal_loss": str(settings.threat.dal_loss).lower(), "threat_attacker_mask": settings.threat.attacker_mask,
        "threat_dal_weight": dal_weight,
        "lpips": lpips.status, "lpips_reason": lpips.reason,
        "success_psnr_threshold": settings.metrics["success_psnr"],
        "attack_chunk": settings.chunk, "attack_jobs": jobs,
        "seconds": time.perf_counter() - start,
    })
    if jobs > 1:
        fields["job"] = job
    if "inverting_gradients" in attacks:
        fields.update(ig_iterations=settings.ig.iterations, ig_restarts=settings.ig.restarts, ig_lr=settings.ig.lr,
                      ig_tv=settings.ig.tv)
    if "gradvit" in attacks:
        fields.update(gradvit_iterations=settings.gradvit.iterations, gradvit_match=settings.gradvit.match,
                      gradvit_image_prior=prior_status, gradvit_image_prior_reason=prior_reason,
                      gradvit_variant="GradViT" if prior is not None else NO_PRIOR)
    if set(attacks) & set(CLOSED_FORM):
        fields.update(april_known_cls=str(settings.april["known_cls"]).lower(), april_solver=settings.april["solver"],
                      april_rcond=str(settings.april["rcond"]))
    metadata = {"experiment": run.name, "kind": kind, "images": names[share.start:share.stop],
                "attacks": list(attacks), "clients": list(settings.clients), "patch_size": patch}
    summary = summarise(table, fields)
    write_outputs(table, recon, metadata, summary, out_metrics, out_table, out_recon)
    return summary
