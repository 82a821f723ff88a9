"""Shared test helpers: micro configurations, a throw-away workflow copy, tiny image folders and runs."""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from vitpe.config import load_params

from vitpe.models.spec import ViTSpec
from vitpe.runs import SupervisedRun, supervised_run, with_recipe

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's snakemake/dvc/vitpe live next to its python
# a test's CUDA variant: marked `cuda` (`make bench-gpu` runs them) and skipped where there is no GPU
CUDA = pytest.param("cuda", marks=[pytest.mark.cuda,
                                   pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")])
DEVICES = ["cpu", CUDA]

# Small enough for seconds on 2 cores; same code paths as the tiny scale.
MICRO = {
    "data": {"embedded": {
        "train_per_class": 6, "val_per_class": 3, "corruption_per_class": 1, "a_per_class": 2,
        "o_per_class": 2, "seg_train": 4, "seg_val": 2, "det_train": 4, "det_val": 2, "attack_images": 2,
    }},
    # one absolute and one relative AdPE variant besides MAE; transfer and attacks on a subset
    "experiments": {"pretrain": ["mae", "adpe_abs_coordinate", "adpe_rel_coordinate"], "transfer": ["mae"]},
    "attacks": {"finetuned": ["mae", "adpe_abs_coordinate"]},
    "scales": {"tiny": {
        "seeds": [0, 1],  # two: the tables and headline aggregate over seeds
        "model": {"embed_dim": 32, "depth": 1, "num_heads": 2},
        "supervised": {"epochs": 1, "batch_size": 16, "lr_batch_divisor": 16, "eval_batch_size": 32,
                       "checkpoint_every": 2},
        "pretrain": {"model": {"embed_dim": 32, "depth": 1, "num_heads": 2},
                     "recipe": {"epochs": 1, "warmup_epochs": 0, "batch_size": 16, "checkpoint_every": 2}},
        "finetune": {"epochs": 1, "warmup_epochs": 0, "batch_size": 16, "lr_batch_divisor": 16,
                     "eval_batch_size": 32},
        "linprobe": {"epochs": 1, "warmup_epochs": 0, "batch_size": 16, "lr_batch_divisor": 16,
                     "eval_batch_size": 32},
        "transfer": {"ade20k": {"iters": 4, "warmup_iters": 1}, "coco": {"iters": 4, "warmup_iters": 1,
                                                                          "milestones": [3]}},
        "attacks": {"iterations": {"inverting_gradients": 5, "gradvit": 5}},
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


def copy_workflow(dest: Path, params: dict) -> Path:
    """The Snakefile, rules, profile, DVC pipeline and ``params`` as params.yaml in ``dest``."""
    for name in ("Snakefile", "dvc.yaml", ".dvcignore"):  # .dvcignore: byte-code is not a source DVC hashes
        shutil.copy(ROOT / name, dest / name)
    for name in ("workflow", "slurm", "src"):
        shutil.copytree(ROOT / name, dest / name)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


@pytest.fixture
def workflow_copy(tmp_path: Path) -> Path:
    """The workflow with a micro params.yaml in a temporary directory."""
    return copy_workflow(tmp_path, micro_params())


@pytest.fixture(scope="session")
def micro_dag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The micro workflow after ``snakemake results/tables/main.tex``: the whole DAG, run once per session.

    Shared by the end-to-end tests: they only read it. A test that changes files starts from
    ``copy_micro_dag`` instead. If the run fails, every test using it errors with the same message.
    """
    cwd = copy_workflow(tmp_path_factory.mktemp("micro_dag"), micro_params())
    run(["snakemake", "--cores", "2", "results/tables/main.tex"], cwd, timeout=2400)  # ~10 min on 2 idle cores
    return cwd


def copy_micro_dag(micro_dag: Path, dest: Path) -> Path:
    """A private copy of the finished micro workflow (file times and Snakemake's records kept: up to date)."""
    return Path(shutil.copytree(micro_dag, dest, symlinks=True))


@pytest.fixture(scope="session")
def embedded_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded dataset at micro sizes (every kind the DAG reads), generated once per session."""
    from vitpe.data.synth import synthesize

    return synthesize(micro_params(), tmp_path_factory.mktemp("embedded"), log=lambda msg: None)


@pytest.fixture
def embedded(embedded_root: Path) -> tuple[dict, Path]:
    """(params, root): fresh micro params pointing at the session's embedded set (copy files before changing them)."""
    params = micro_params()
    params["data"]["embedded"]["root"] = str(embedded_root)
    return params, embedded_root


# --- micro supervised runs on a tiny synthetic ImageFolder (train/eval tests) -----------------------

NUM_CLASSES = 10  # the schema's minimum for the embedded dataset
MICRO_MODEL = {"img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}
MICRO_RECIPE = {"epochs": 3, "warmup_epochs": 1, "batch_size": 4, "lr_batch_divisor": 4,
                "checkpoint_every": 4, "eval_batch_size": 8, "randaugment": "rand-m5-mstd0.5-inc1",
                "validate_every": 1}  # 3 epochs: a validation between each


def make_image_folder(root: Path, train_per_class: int = 2, val_per_class: int = 1, size: int = 16,
                      num_classes: int = NUM_CLASSES, seed: int = 0) -> Path:
    """root/{train,val}/cNN/*.png with class-dependent colour (learnable) plus noise."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for c in range(num_classes):
            folder = root / split / f"c{c:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            base = np.array([(37 * c) % 256, (91 * c) % 256, (151 * c) % 256], dtype=np.int16)
            for i in range(count):
                noise = rng.integers(-40, 40, (size, size, 3))
                Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def make_attack_data(data: Path) -> Path:
    """data/imagenet (one image per class and split) and data/attack: photographs of some classes."""
    make_image_folder(data / "imagenet", train_per_class=1, val_per_class=1)
    for i, cls in enumerate(("c01", "c04", "c07")):
        (data / "attack" / cls).mkdir(parents=True)
        src = next((data / "imagenet" / "val" / cls).iterdir())
        Image.open(src).save(data / "attack" / cls / f"photo{i}.png")
    return data


def micro_run(data_root: Path, experiment: str = "deit_s", **recipe: object) -> SupervisedRun:
    run = supervised_run(load_params(ROOT / "params.yaml"), experiment)
    return dataclasses.replace(
        with_recipe(run, **{**MICRO_RECIPE, **recipe}), model=ViTSpec(**MICRO_MODEL),
        num_classes=NUM_CLASSES, train_dir=data_root / "train", val_dir=data_root / "val",
    )


def micro_params_file(tmp_path: Path, data_root: Path, **recipe: object) -> Path:
    """A params.yaml whose tiny scale is the micro run, for CLI tests (data under data_root/imagenet)."""
    params = deep_update(yaml.safe_load((ROOT / "params.yaml").read_text()), {
        "data": {"embedded": {"root": str(data_root), "num_classes": NUM_CLASSES}},
        "scales": {"tiny": {"model": MICRO_MODEL, "supervised": {**MICRO_RECIPE, **recipe}}},
    })
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def log_records(out: Path) -> list[dict]:
    """The published log.jsonl, without the timing field (which legitimately differs between runs)."""
    lines = (out / "log.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "imgs_per_s"} for line in lines]
