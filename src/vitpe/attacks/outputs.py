"""A model's attack outputs (metrics JSON, per-image CSV, reconstructions) and the merge of its jobs.

A job writes the same three files as a whole run, for its share of the images. Merging concatenates
the tables and reconstructions in job order (the images' order), checks that every setting recorded
by the jobs agrees, and recomputes the aggregates over all images: the result is the file set of one
job over every image.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from vitpe.attacks import metrics as M
from vitpe.errors import DataError
from vitpe.io import all_or_none, atomic_path, read_json, write_json

ROW_METRICS = ("mse", "psnr", "ssim", "fft2d", "lpips", "psnr_fed", "ssim_fed", "psnr_kept", "psnr_shuffled",
               "pos_acc", "pos_disp", "perm_psnr", "label_ok", "objective", "seconds")
#: fields each job measures for itself: summed (images, seconds) or taken from job 0 (the clean top-1
#: of the same weights on the same validation set)
SUMMED = ("num_images", "seconds")
FROM_FIRST = ("clean_top1",)


def summarise(table: pd.DataFrame, fields: dict[str, Any]) -> dict[str, Any]:
    """The metrics JSON: ``<attack>_<mode>_<metric>_<stat>`` aggregates of ``table`` plus ``fields``."""
    metrics = [m for m in ROW_METRICS if m in table]
    return {**M.aggregate(table, metrics, fields["success_psnr_threshold"]), **fields}


def write_outputs(table: pd.DataFrame, recon: dict[str, torch.Tensor], metadata: dict[str, Any],
                  summary: dict[str, Any], out_metrics: Path, out_table: Path, out_recon: Path) -> None:
    """Write the three files atomically, the metrics last (the file the workflow waits for first)."""
    from vitpe.models.weights import save_tensors

    with all_or_none((out_table, out_recon, out_metrics)):  # a table without its metrics is no finished run
        with atomic_path(out_table) as tmp:
            table.to_csv(tmp, index=False)
        save_tensors(recon, out_recon, metadata)
        write_json(out_metrics, summary)


def read_reconstructions(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not Path(path).is_file():
        raise DataError(f"{path}: reconstructions not found")
    from vitpe.models.weights import read_metadata, read_weights

    metadata = read_metadata(path)
    if not metadata:
        raise DataError(f"{path}: no vitpe metadata (not written by vitpe attack run)")
    return read_weights(path), metadata


def read_attack_table(path: Path) -> pd.DataFrame:
    """A per-image table written by ``vitpe attack run`` / ``merge``."""
    if not Path(path).is_file():
        raise DataError(f"{path}: per-image attack table not found")
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a readable CSV ({reason}); expected the per-image attack table") from None


def _read_job(metrics: Path, table: Path, recon: Path) -> tuple[dict, pd.DataFrame, dict, dict]:
    summary = read_json(metrics, "attack job metrics", require_object=True)
    return summary, read_attack_table(table), *read_reconstructions(recon)


def merge_jobs(metrics: Sequence[Path], tables: Sequence[Path], recons: Sequence[Path],
               out_metrics: Path, out_table: Path, out_recon: Path) -> dict[str, Any]:
    """Merge one model's job outputs (given in any order) into the outputs of a single run."""
    if not (len(metrics) == len(tables) == len(recons)) or not metrics:
        raise DataError(f"attack merge: {len(metrics)} metrics, {len(tables)} tables and {len(recons)} "
                        "reconstruction files; expected one of each per job")
    jobs = sorted((_read_job(*paths) + (paths[0],) for paths in zip(metrics, tables, recons)),
                  key=lambda j: j[0].get("job", -1))
    count = jobs[0][0].get("attack_jobs")
    found = [j[0].get("job") for j in jobs]
    if found != list(range(len(jobs))) or count != len(jobs):
        raise DataError(f"attack merge: job indices {found} in {', '.join(str(j[4]) for j in jobs)}; expected "
                        f"every job 0..{(count or 0) - 1} of attack_jobs {count} once")
    fields = []
    for summary, table, _, _, path in jobs:
        aggregates = set(M.aggregate(table, [m for m in ROW_METRICS if m in table], 0.0))
        fields.append({k: v for k, v in summary.items() if k not in aggregates and k != "job"})
    first = fields[0]
    for other, (_, _, _, _, path) in zip(fields[1:], jobs[1:]):
        for key in sorted(set(first) | set(other)):
            if key not in SUMMED + FROM_FIRST and first.get(key) != other.get(key):
                raise DataError(f"{path}: {key} is {other.get(key)!r}, job 0 recorded {first.get(key)!r} "
                                "(jobs of one model must share every setting)")
    merged = {**first, **{key: sum(f[key] for f in fields) for key in SUMMED}}
    metadata = dict(jobs[0][3])
    for _, _, _, meta, path in jobs[1:]:
        if {k: v for k, v in meta.items() if k != "images"} != {k: v for k, v in metadata.items() if k != "images"}:
            raise DataError(f"{path}: reconstruction metadata differs from job 0's")
    metadata["images"] = [name for job in jobs for name in job[3]["images"]]
    keys = list(jobs[0][2])
    for _, _, recon, _, path in jobs[1:]:
        if list(recon) != keys:
            raise DataError(f"{path}: reconstruction keys differ from job 0's")
    recon = {k: torch.cat([job[2][k] for job in jobs]) for k in keys}
    table = _table_order(pd.concat([job[1] for job in jobs], ignore_index=True), metadata)
    summary = summarise(table, merged)
    write_outputs(table, recon, metadata, summary, out_metrics, out_table, out_recon)
    return summary


def _table_order(table: pd.DataFrame, metadata: dict[str, Any]) -> pd.DataFrame:
    """Rows in a single run's order: client mode, then image, then attack (the configured orders)."""
    if table.empty:
        return table
    ranks = [table["mode"].map({m: i for i, m in enumerate(metadata["clients"])}),
             table["image"].map({name: i for i, name in enumerate(metadata["images"])}),
             table["attack"].map({a: i for i, a in enumerate(metadata["attacks"])})]
    order = pd.DataFrame({"m": ranks[0], "i": ranks[1], "a": ranks[2]}).sort_values(["m", "i", "a"], kind="stable")
    return table.loc[order.index].reset_index(drop=True)
