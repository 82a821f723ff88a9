"""The mmengine configs of the transfer runs: every number params.yaml holds comes from it.

src/vitpe/transfer/configs/*.py keep only what params.yaml does not hold (architecture constants of the
upstream configs); vitpe.transfer.runner.build_config fills in scales.<scale>.transfer.<task>. The built
configs of the tiny and smoke scales are frozen in tests/data/transfer_configs.json (the configs as built
before the numbers moved out of the config files): a change there is a change of what the runs train.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import ROOT
from test_transfer import make_encoder
from vitpe.config import load_params

pytest.importorskip("mmengine")

FROZEN = ROOT / "tests" / "data" / "transfer_configs.json"
CASES = [(scale, task) for scale in ("tiny", "smoke") for task in ("ade20k", "coco")]
# the encoder the configs are built for: the tiny architecture, or ViT-B/16 layout cut to 2 narrow blocks
ENCODERS = {"tiny": {}, "smoke": dict(img_size=224, patch_size=16, embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0)}
ADE20K_CLASSES = ["wall", "floor", "tree"]
COCO_CATEGORIES = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]


def _dataset_root(tmp: Path, scale: str) -> Path:
    """The files build_config reads: the embedded sets' class lists (tiny), the folders only (smoke)."""
    root = tmp / "data"
    (root / "ade20k").mkdir(parents=True)
    (root / "coco" / "annotations").mkdir(parents=True)
    if scale == "tiny":
        (root / "ade20k" / "classes.json").write_text(json.dumps({"classes": ADE20K_CLASSES}))
        (root / "coco" / "annotations" / "instances_train2017.json").write_text(
            json.dumps({"images": [], "annotations": [], "categories": COCO_CATEGORIES}))
    return root


def built_config(tmp: Path, scale: str, task: str) -> dict:
    """The config dict build_config makes on one CPU process, temporary paths replaced by <tmp>."""
    from vitpe.runs import transfer_run
    from vitpe.transfer.runner import build_config

    kind = "embedded" if scale == "tiny" else "mini"
    root = _dataset_root(tmp, scale)
    params = load_params(ROOT / "params.yaml", [f"scale={scale}", f"data.{kind}.root={root}"])
    encoder = make_encoder(tmp / "encoder.safetensors", scale=scale, **ENCODERS[scale])
    cfg = build_config(transfer_run(params, task, "mae"), encoder, tmp / "work", cuda=False, world=1)
    text = json.dumps(cfg.to_dict(), sort_keys=True, default=repr).replace(str(tmp), "<tmp>")
    return json.loads(text)  # tuples -> lists, as frozen


# Top-level variables of the COCO config file that mmengine never reads: the pipelines the dataloaders
# copy (the runner sizes the copies) and the paper's iteration count. They held the paper's 1024 px and
# 184375 at every scale; now they hold no number of params.yaml.
TEMPLATES = {"train_pipeline", "test_pipeline", "max_iters"}


@pytest.mark.parametrize("scale, task", CASES)
def test_built_configs_are_unchanged(scale, task, tmp_path):
    built = built_config(tmp_path, scale, task)
    frozen = json.loads(FROZEN.read_text())[f"{scale}/{task}"]
    assert {k: v for k, v in built.items() if k not in TEMPLATES} == {k: v for k, v in frozen.items()
                                                                      if k not in TEMPLATES}
    recipe = load_params(ROOT / "params.yaml", [f"scale={scale}"])["scales"][scale]["transfer"][task]
    assert built["train_dataloader"]["batch_size"] == recipe["batch_size"]
    assert built["train_cfg"]["max_iters"] == recipe["iters"] and "max_iters" not in built
    if task == "coco":  # ADE20K's top-level pipelines are the upstream mmseg file's, untouched
        for step in built["train_pipeline"] + built["test_pipeline"]:
            assert not {"scale", "size", "crop_size"} & set(step), step


# keys whose values the runner sets from the recipe and the encoder
RUNNER_SET = ("lr", "weight_decay", "layer_decay_rate", "decay_pos_embed", "drop_path", "interval", "batch_size",
              "num_workers", "max_iters", "img_size", "embed_dim", "in_channels", "out_channels", "size", "scale",
              "crop_size", "window_size", "global_blocks", "milestones")


@pytest.mark.parametrize("task", ["ade20k", "coco"])
def test_config_files_repeat_no_number_of_params(task):
    """A transfer number written in the config file as well would be overwritten by the runner, and could
    drift from params.yaml unnoticed: the files hold neither the keys the runner sets nor the paper's counts."""
    from vitpe.transfer.runner import CONFIG_DIR, CONFIGS

    code = "\n".join(line.split("#")[0] for line in (CONFIG_DIR / CONFIGS[task]).read_text().splitlines())
    assigned = sorted(set(re.findall(rf"\b({'|'.join(RUNNER_SET)})\s*=", code)))
    assert assigned == [], f"{CONFIGS[task]} sets what the runner takes from params.yaml: {assigned}"
    recipe = load_params(ROOT / "params.yaml")["scales"]["paper"]["transfer"][task]
    values = [v for value in recipe.values() for v in (value if isinstance(value, list) else [value])]
    counts = {v for v in values if isinstance(v, int) and not isinstance(v, bool) and v > 100}
    repeated = sorted(n for n in counts if re.search(rf"\b{n}\b", code))
    assert repeated == [], f"{CONFIGS[task]} repeats scales.paper.transfer.{task} values {repeated}"


if __name__ == "__main__":  # regenerate the frozen configs: python tests/test_transfer_configs.py
    import tempfile

    frozen = {}
    for scale, task in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            frozen[f"{scale}/{task}"] = built_config(Path(tmp), scale, task)
    FROZEN.write_text(json.dumps(frozen, sort_keys=True, indent=1) + "\n")
