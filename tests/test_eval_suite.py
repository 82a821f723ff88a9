"""``vitpe eval suite``: every evaluation of one model in one process, byte-identical to the separate
commands, and all of its files or none."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import MICRO_MODEL, NUM_CLASSES, make_image_folder, micro_params_file
from vitpe.cli import main
from vitpe.data.subsets import BENCHMARK_CORRUPTIONS, SEVERITIES
from vitpe.errors import DataError
from vitpe.evaluate import suite
from vitpe.evaluate.commands import SUITE_KINDS
from vitpe.models import build_vit
from vitpe.models.weights import save_weights

SEPARATE = {"classify": "classify", "shuffle": "shuffle", "robustness": "robustness", "pe_probe": "pe-probe"}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """root/imagenet (10 classes, 2 val images each) and minimal ImageNet-C (the 15 benchmark
    corruptions), -A and -O folders."""
    root = tmp_path_factory.mktemp("data")
    make_image_folder(root / "imagenet", train_per_class=1, val_per_class=2)
    rng = np.random.default_rng(2)
    images = [root / "imagenet-c" / c / str(s) / "c03" / "0.png" for c in BENCHMARK_CORRUPTIONS for s in SEVERITIES]
    images += [root / "imagenet-a" / name / "0.png" for name in ("c02", "c05")]
    images += [root / "imagenet-o" / "c01" / f"{i}.png" for i in range(2)]
    for path in images:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
    return root


@pytest.fixture
def model_args(data_root, tmp_path) -> list[str]:
    torch.manual_seed(4)
    weights = tmp_path / "model.safetensors"
    save_weights(build_vit(MICRO_MODEL, NUM_CLASSES, "learnable", 0.0), weights,
                 {"model": MICRO_MODEL, "pos_embed": "learnable", "num_classes": NUM_CLASSES})
    params = micro_params_file(tmp_path, data_root)
    return ["--params", str(params), "--set", "seed=3", "--set", "evaluation.shuffle_masks=3",
            "--experiment", "deit_s", "--weights", str(weights), "--device", "cpu"]


def test_suite_files_equal_the_separate_commands_files(model_args, tmp_path, capsys):
    for kind, command in SEPARATE.items():
        args = [a for a in model_args if command != "pe-probe" or a not in ("--device", "cpu")]
        assert main(["eval", command, *args, "--out", str(tmp_path / "alone" / f"{kind}.json")]) == 0
    assert main(["eval", "suite", *model_args, "--out-dir", str(tmp_path / "suite")]) == 0
    out = capsys.readouterr().out
    assert set(SUITE_KINDS) == set(suite.KINDS) == set(SEPARATE)
    written = sorted(p.name for p in (tmp_path / "suite").iterdir())
    assert written == sorted(f"{kind}.json" for kind in SEPARATE)  # no temporary files left
    for kind in SEPARATE:
        assert (tmp_path / "suite" / f"{kind}.json").read_bytes() == (tmp_path / "alone" / f"{kind}.json").read_bytes()
    shuffle = json.loads((tmp_path / "suite" / "shuffle.json").read_text())
    assert shuffle["shuffle_masks"] == 3 and shuffle["seed"] == 3  # params (--set) reach the suite
    assert shuffle["consistency_ratio"] == 0.5 and "shuffled_top1_r0.90_std" in shuffle  # evaluation.* defaults
    assert "top-1" in out and "shuffled top-1 by ratio (3 masks)" in out and "PE probe MAE" in out


def test_suite_kinds_select_the_files(model_args, tmp_path):
    assert main(["eval", "suite", *model_args, "--kinds", "pe_probe", "classify", "--out-dir", str(tmp_path / "s")]) == 0
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["classify.json", "pe_probe.json"]


def test_a_failing_kind_leaves_none_of_the_suites_files(model_args, tmp_path, monkeypatch, capsys):
    out_dir = tmp_path / "suite"
    out_dir.mkdir()
    (out_dir / "shuffle.json").write_text("{}\n")  # a stale file of an earlier run: must not look finished
    calls = []

    def broken(model, run, folds=5):
        calls.append(run.name)  # reached after classify, shuffle and robustness succeeded
        raise DataError("probe: broken on purpose")

    monkeypatch.setattr(suite, "pe_probe_metrics", broken)
    assert main(["eval", "suite", *model_args, "--out-dir", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert calls == ["deit_s"] and err.strip().splitlines()[-1] == "error: probe: broken on purpose"
    assert list(out_dir.iterdir()) == []


def test_inputs_are_checked_before_the_model_is_loaded(model_args, tmp_path, capsys):
    # a missing ImageNet-C root fails the suite up front; the weights are never read
    args = [a if not a.endswith("model.safetensors") else str(tmp_path / "absent.safetensors") for a in model_args]
    args += ["--set", f"data={{'embedded': {{'root': '{tmp_path / 'nowhere'}'}}}}"]
    assert main(["eval", "suite", *args, "--out-dir", str(tmp_path / "s")]) == 2
    assert "imagenet-c dataset not found" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    assert main(["eval", "suite", *model_args, "--set", "evaluation.shuffle_masks=0",
                 "--out-dir", str(tmp_path / "s")]) == 2
    assert "shuffle_masks" in capsys.readouterr().err


def test_encoder_evaluations_write_pretext_and_each_protocol_or_nothing(tmp_path, monkeypatch):
    """``evaluate_encoder`` (rule eval_encoder): the pretext metrics and one classify file per protocol, from
    the protocol's own run and weights; a failing protocol leaves none of the files, stale ones included."""
    params = {"data": {}, "scale": "tiny"}
    monkeypatch.setattr(suite, "dataset_paths", lambda p: {"imagenet": tmp_path / "imagenet"})
    monkeypatch.setattr(suite, "pretrain_run", lambda p, exp: ("pretrain", exp))
    monkeypatch.setattr(suite, "stage_run", lambda p, stage, exp: (stage, exp))
    monkeypatch.setattr(suite, "pretext_metrics", lambda run, weights, log, val, device=None:
                        {"val_loss": 0.5, "run": list(run), "log": log.name, "val": val.name})
    monkeypatch.setattr(suite, "load_trained", lambda run, weights, device=None: (weights.name, "cpu"))
    monkeypatch.setattr(suite, "classification_metrics", lambda model, device, run:
                        {"top1": 90.0 if run[0] == "finetune" else 20.0, "weights": model})
    out = tmp_path / "out"
    out.mkdir()
    classifiers = {"finetune": tmp_path / "ft.safetensors", "linprobe": tmp_path / "lp.safetensors"}
    suite.evaluate_encoder(params, "mae", tmp_path / "pre.safetensors", tmp_path / "log.jsonl", classifiers, out)
    assert sorted(p.name for p in out.iterdir()) == ["finetune.json", "linprobe.json", "pretext.json"]
    read = {p.stem: json.loads(p.read_text()) for p in out.iterdir()}
    assert read["pretext"] == {"val_loss": 0.5, "run": ["pretrain", "mae"], "log": "log.jsonl", "val": "val"}
    assert read["finetune"] == {"top1": 90.0, "weights": "ft.safetensors"}
    assert read["linprobe"] == {"top1": 20.0, "weights": "lp.safetensors"}

    def broken(model, device, run):
        if run[0] == "linprobe":
            raise DataError("linprobe: broken on purpose")
        return {"top1": 1.0}

    monkeypatch.setattr(suite, "classification_metrics", broken)
    with pytest.raises(DataError, match="broken on purpose"):
        suite.evaluate_encoder(params, "mae", tmp_path / "pre.safetensors", tmp_path / "log.jsonl", classifiers, out)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("eval_amp", ["none", "bf16"])
def test_eval_amp_autocasts_every_forward_of_the_suite(data_root, tmp_path, monkeypatch, eval_amp):
    """The recipe's ``eval_amp`` reaches every evaluation forward (clean, shuffled, consistency, C/A/O).
    Autocast is CUDA-only in the workflow; here the CPU's bf16 autocast stands in for it."""
    import contextlib

    from torch import nn

    from vitpe.evaluate import classification, robustness, shuffled

    def cpu_autocast(device, amp):
        return torch.autocast("cpu", dtype=torch.bfloat16) if amp == "bf16" else contextlib.nullcontext()

    for module in (classification, shuffled, robustness):
        monkeypatch.setattr(module, "autocast", cpu_autocast)
    torch.manual_seed(4)
    weights = tmp_path / "model.safetensors"
    save_weights(build_vit(MICRO_MODEL, NUM_CLASSES, "learnable", 0.0), weights,
                 {"model": MICRO_MODEL, "pos_embed": "learnable", "num_classes": NUM_CLASSES})
    params = micro_params_file(tmp_path, data_root, eval_amp=eval_amp)
    dtypes = []
    hook = nn.modules.module.register_module_forward_hook(
        lambda module, args, out: dtypes.append(out.dtype) if isinstance(module, nn.Linear) else None)
    try:
        assert main(["eval", "suite", "--params", str(params), "--experiment", "deit_s", "--weights", str(weights),
                     "--kinds", "classify", "shuffle", "robustness", "--device", "cpu",
                     "--out-dir", str(tmp_path / "suite")]) == 0
    finally:
        hook.remove()
    expected = torch.bfloat16 if eval_amp == "bf16" else torch.float32
    assert len(dtypes) > 100 and set(dtypes) == {expected}
    top1 = json.loads((tmp_path / "suite" / "classify.json").read_text())["top1"]
    assert 0.0 <= top1 <= 100.0
