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
from vitpe.attacks.budget import job_ranges, jobs_for
from vitpe.attacks.gradvit import GradViTSettings
from vitpe.attacks.inverting_gradients import IGSettings
from vitpe.attacks.outputs import summarise, write_outputs
from vitpe.attacks.registry import (Attack, AttackContext, ClientCase, Reconstruction, attack_class,
                                   prefixed_fields)
from vitpe.attacks.threat import (ThreatModel, attacker_labels, box_bounds, client_update, denormalize,
                                  detect_unknown_rows, prepare_model, takes_mask)
from vitpe.runs import SupervisedRun, dataset_paths
from vitpe.errors import ConfigError, DataError

KINDS = ("supervised", "april", "finetuned")
#: the threat model's settings recorded in the metrics JSON as ``threat_<name>``
THREAT_FIELDS = ("batch_size", "labels", "shuffle_ratio", "dal_loss", "attacker_mask")
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
        """APRIL's block: ``closed_form``; the standard block: ``optimisation`` + ``standard_closed_form``."""
        if kind == "april":
            return tuple(self.lists["closed_form"])
        return tuple(self.lists["optimisation"] + self.lists["standard_closed_form"])


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
    for name in cfg["april_models"]:  # attacks.models: checked with the params (vitpe.config)
        if name not in params["supervised"]:
            raise ConfigError(f"params.yaml: attacks lists unknown supervised experiment {name!r}")
    for kind in ("optimisation", "closed_form"):
        for name in cfg[kind]:
            found = attack_class(name, f"params.yaml: attacks.{kind}").kind
            if found != kind:
                raise ConfigError(f"params.yaml: attacks.{kind} lists {name!r}, a {found} attack")
    standard = list(cfg.get("standard_closed_form", []))
    for name in standard:  # run on models, finetuned: closed forms that need no APRIL block
        cls = attack_class(name, "params.yaml: attacks.standard_closed_form")
        if cls.kind != "closed_form" or not cls.standard_block:
            what = "needs APRIL's block 0" if cls.kind == "closed_form" else f"is a {cls.kind} attack"
            raise ConfigError(f"params.yaml: attacks.standard_closed_form lists {name!r}, which {what} "
                              "(list it under attacks.closed_form or attacks.optimisation)")
    for name in cfg["april_models"]:
        if not params["supervised"][name].get("april"):
            raise ConfigError(f"params.yaml: attacks.april_models: supervised.{name} is not APRIL-compatible "
                              "(set april: true)")
    threat = dict(cfg["threat"])
    if threat.get("shuffle_ratio") is None:  # the client trains as MJP does at this scale
        threat["shuffle_ratio"] = params["scales"][params["scale"]]["mjp_gamma"]
    gv = dict(cfg["gradvit"])
    gv["alpha_grad"], gv["alpha_image"] = tuple(gv["alpha_grad"]), tuple(gv["alpha_image"])
    images_dir = cfg.get("images_dir")
    if images_dir is None:
        paths = dataset_paths(params)
        images_dir = paths.get("attack", paths["imagenet"] / "val")
    return AttackSettings(
        threat=ThreatModel.from_params(threat),
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
        lists={"closed_form": list(cfg["closed_form"]), "optimisation": list(cfg["optimisation"]),
               "standard_closed_form": standard},
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
    from vitpe.evaluate.common import TopKCounter
    from vitpe.train.data import build_eval_loader

    loader = build_eval_loader(run.val_dir, run.recipe, run.model.img_size, run.num_classes,
                               run.runtime.eval_batch_size, run.runtime.num_workers)
    counts = TopKCounter(k=1)
    for images, targets in loader:
        counts.update(model(images.to(device)), targets)
    return counts.percent()["top1"]


MEAN, STD = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


def client_case(model: nn.Module, x: torch.Tensor, y: torch.Tensor, first: int, mode: str,
                settings: AttackSettings, patch: int, dal_weight: float) -> ClientCase:
    """The client step on images ``first``.. in ``mode`` and what the attacker derives from its gradient."""
    update = client_update(model, x, y, mode, settings.threat, patch, settings.seed + first, dal_weight)
    detected = detect_unknown_rows(update, model) if settings.threat.attacker_mask == "detected" else None
    mask = detected if (detected is not None and takes_mask(model)) else None
    return ClientCase(first, update, attacker_labels(update, settings.threat, model), detected, mask)


@dataclass(frozen=True)
class _Scoring:
    """The per-image table rows of reconstructions of the attack images (metrics on [0, 1] images)."""

    images: torch.Tensor  # the attack images, normalised, on the device
    names: list[str]
    patch: int
    lpips: M.Lpips
    device: torch.device

    def rows(self, case: ClientCase, result: Reconstruction, attack: str, mode: str,
             seconds: float) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """The [0, 1] reconstruction (matched to the fed order) and one row per image of the case."""
        y = case.update.labels
        original01 = denormalize(self.images[case.first:case.first + len(y)], MEAN, STD)
        fed01 = denormalize(case.update.fed, MEAN, STD)
        rec01 = denormalize(result.images.to(self.device).float(), MEAN, STD)
        if len(y) > 1:
            rec01 = M.match_order(rec01, fed01)
        per_image = M.image_rows(rec01.cpu(), original01.cpu(), fed01.cpu(), self.patch, case.update.shuffled,
                                 self.lpips)
        label_ok = float(sorted(case.guess.tolist()) == sorted(y.tolist()))
        shuffled = int(case.update.shuffled.sum()) if case.update.shuffled is not None else 0
        detected = int(case.detected.sum()) if case.detected is not None else 0
        info = {f"info_{k}": v for k, v in result.info.items() if isinstance(v, (int, float, bool))}
        rows = [{"image": self.names[case.first + i], "label": int(y[i]), "attack": attack, "mode": mode, **values,
                 "label_ok": label_ok, "objective": result.objective, "seconds": seconds,
                 "n_shuffled": shuffled, "n_detected": detected, **info}
                for i, values in enumerate(per_image)]
        return rec01.float().cpu(), rows


def run_attacks(model: nn.Module, run: SupervisedRun, kind: str, settings: AttackSettings, device: torch.device,
                out_metrics: Path, out_table: Path, out_recon: Path, dal_weight: float = 0.0,
                log=print, job: int = 0) -> dict[str, Any]:
    """Attack ``model`` on job ``job``'s share of the attack images (budget.job_ranges) in every client
    mode; write metrics JSON, the per-image CSV and the reconstructions (safetensors, [0, 1] images)."""
    from vitpe.evaluate.common import training_classes
    from vitpe.data.transforms import eval_transform

    if kind not in KINDS:
        raise ConfigError(f"unknown model kind {kind!r} (known: {', '.join(KINDS)})")
    jobs = settings.jobs_for(kind)
    if not 0 <= job < jobs:
        raise ConfigError(f"attack job {job} does not exist: {run.name} ({kind}) runs as {jobs} job(s)")
    start = time.perf_counter()
    model = prepare_model(model)
    classes = {name: attack_class(name) for name in settings.attacks_for(kind)}
    skipped = {}
    if settings.threat.batch_size > 1:  # APRIL reads dL/dz off the PE gradient: one image only
        skipped = {name: f"needs batch size 1, threat.batch_size is {settings.threat.batch_size}"
                   for name, cls in classes.items() if cls.kind == "closed_form"}
    attacks = tuple(name for name in classes if name not in skipped)
    patch, img = run.model.patch_size, run.model.img_size
    images, labels, names = attack_images(settings.images_dir, training_classes(run), settings.images,
                                          eval_transform(img, run.recipe.test_crop_ratio))
    batch = settings.threat.batch_size
    share = job_ranges(len(images), batch, jobs)[job]
    images, labels = images.to(device), labels.to(device)
    context = AttackContext(box_bounds(MEAN, STD, device), patch, settings.chunk, settings.seed, device)
    built: dict[str, Attack] = {name: classes[name].build(settings, context) for name in attacks}
    for name, attack in built.items():  # refused before any client step, in one line naming the model
        try:
            attack.check(model)
        except ConfigError as err:
            raise ConfigError(f"{run.name} ({kind}): attack {name}: {err}") from None
    lpips = M.Lpips(settings.metrics.get("lpips_alexnet"))
    scoring = _Scoring(images, names, patch, lpips, device)
    rows: dict[tuple[int, int, int], dict[str, Any]] = {}  # (mode, image, attack) -> row: the table's order
    recon: dict[str, torch.Tensor] = {"original": denormalize(images[share.start:share.stop], MEAN, STD).float().cpu()}
    n = (img // patch) ** 2
    starts = list(range(share.start, share.stop, batch))
    for m, mode in enumerate(settings.clients):
        fed_all, shuffled_all, rec_all = [], [], {a: [] for a in attacks}
        for chunk_start in range(0, len(starts), settings.chunk):
            cases = [client_case(model, images[first:first + batch], labels[first:first + batch], first, mode,
                                 settings, patch, dal_weight)
                     for first in starts[chunk_start:chunk_start + settings.chunk]]
            for case in cases:
                fed_all.append(denormalize(case.update.fed, MEAN, STD).float().cpu())
                shuffled_all.append((case.update.shuffled if case.update.shuffled is not None
                                     else torch.zeros(n, dtype=torch.bool)).cpu().expand(len(case.update.fed), -1))
            for a, attack in enumerate(attacks):
                t0 = time.perf_counter()
                results = built[attack].reconstruct(model, cases)
                seconds = (time.perf_counter() - t0) / sum(len(case.update.labels) for case in cases)
                for case, result in zip(cases, results):
                    rec01, case_rows = scoring.rows(case, result, attack, mode, seconds)
                    rec_all[attack].append(rec01)
                    for i, row in enumerate(case_rows):
                        rows[(m, case.first + i, a)] = row
                    log(f"{run.name} {mode} {names[case.first]} {attack}: PSNR {case_rows[0]['psnr']:.2f} dB "
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
        **prefixed_fields("threat", vars(settings.threat), THREAT_FIELDS),
        "threat_model_mode": "eval", "threat_dal_weight": dal_weight,
        "lpips": lpips.status, "lpips_reason": lpips.reason,
        "success_psnr_threshold": settings.metrics["success_psnr"],
        "attack_chunk": settings.chunk, "attack_jobs": jobs,
        "seconds": time.perf_counter() - start,
    })
    if jobs > 1:
        fields["job"] = job
    for attack in built.values():
        fields.update(attack.recorded())
    metadata = {"experiment": run.name, "kind": kind, "images": names[share.start:share.stop],
                "attacks": list(attacks), "clients": list(settings.clients), "patch_size": patch}
    summary = summarise(table, fields)
    write_outputs(table, recon, metadata, summary, out_metrics, out_table, out_recon)
    return summary
