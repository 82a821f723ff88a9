"""Shared fixtures: a throw-away copy of the workflow with a micro configuration."""
from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's snakemake/dvc/vitpe live next to its python

# Small enough for seconds on 2 cores; same code paths as the tiny scale.
MICRO = {
    "data": {"embedded": {
        "train_per_class": 6, "val_per_class": 3, "corruption_per_class": 1, "a_per_class": 2,
        "o_per_class": 2, "seg_train": 4, "seg_val": 2, "det_train": 4, "det_val": 2, "attack_images": 2,
    }},
    "scales": {"tiny": {
        "model": {"embed_dim": 32, "depth": 1, "num_heads": 2},
        "supervised": {"epochs": 1, "batch_size": 16, "lr_batch_divisor": 16, "eval_batch_size": 32,
                       "checkpoint_every": 2},
    }},
}


def deep_update(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = deep_update(out[key], value) if isinstance(value, dict) else value
    return out


def micro_params() -> dict:
    return deep_update(yaml.safe_load((ROOT / "params.yaml").read_text()), MICRO)


def run(cmd: list[str], cwd: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture
def workflow_copy(tmp_path: Path) -> Path:
    """The Snakefile, rules, profile, DVC pipeline and a micro params.yaml in a temporary directory."""
    for name in ("Snakefile", "dvc.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    for name in ("workflow", "slurm", "src"):
        shutil.copytree(ROOT / name, tmp_path / name)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(micro_params(), sort_keys=False))
    return tmp_path
