"""Defects that break a first paper-scale run: the RandAugment posterize crash, hanging DataLoader
workers, --max-steps runs without weights, metrics files without their metric, ImageNet-C copies
with the 15 benchmark corruptions only, ImageNet-A/-O class subsets and a CPU-only mmcv on a GPU node."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import ImageNetInfo
from timm.data.auto_augment import AugmentOp, RandAugment

from conftest import MICRO_MODEL, ROOT, make_image_folder, micro_params_file, micro_run
from vitpe.cli import main
from vitpe.config import load_params
from vitpe.data.subsets import BENCHMARK_CORRUPTIONS, EXTRA_CORRUPTIONS, SEVERITIES
from vitpe.errors import DataError, EvaluationError
from vitpe.data.hendrycks_lists import IMAGENET_A_INDICES, IMAGENET_O_INDICES
from vitpe.evaluate.robustness import evaluate_robustness, subset_mask
from vitpe.models import build_vit
from vitpe.runs import ClassifierRecipe, stage_run
from vitpe.models.weights import read_metadata, save_weights
from vitpe.train.data import POSTERIZE_OPS, posterize_keeping, train_transform


# --- 1. RandAugment rand-m9-mstd0.5-inc1 with the pinned Pillow -------------------------------------

def _randaugment(recipe: ClassifierRecipe) -> RandAugment:
    (step,) = [t for t in train_transform(recipe, 224).transforms if isinstance(t, RandAugment)]
    return step


@pytest.mark.parametrize("stage", ["supervised", "finetune"])
def test_paper_randaugment_never_raises_over_1e5_draws(stage):
    recipe = stage_run(load_params(ROOT / "params.yaml", ["scale=paper"]), stage, "deit_s" if stage == "supervised"
                       else "mae").recipe
    assert recipe.randaugment == "rand-m9-mstd0.5-inc1"
    augment = _randaugment(recipe)
    assert {op.name for op in augment.ops} >= {"PosterizeIncreasing"}
    # the policy's own random draws (op choice, apply prob, magnitude) on an 8 x 8 image: the
    # magnitude N(9, 0.5) clipped at 10 maps to 0 posterize bits in ~2 % of the posterize draws
    random.seed(0)
    np.random.seed(0)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    for _ in range(100_000):
        out = augment(image)
    assert out.size == (8, 8) and out.mode == "RGB"


def test_zero_bit_posterize_blackens_as_the_official_environment_did():
    # Pillow of the official code's time: mask ~(2 ** 8 - 1) keeps no bit; Pillow 13 raises instead
    image = Image.fromarray(np.random.default_rng(1).integers(1, 256, (4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="bits must be between"):
        AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10)(image)  # timm's op, unpatched
    augment = _randaugment(stage_run(load_params(ROOT / "params.yaml", ["scale=paper"]), "supervised", "deit_s").recipe)
    (op,) = [op for op in augment.ops if op.name in POSTERIZE_OPS]
    op.prob, op.magnitude_std, op.magnitude = 1.0, 0.0, 10.0  # always the top magnitude
    assert not np.asarray(op(image)).any()
    kept = np.asarray(image) & 0b11000000  # 2 bits kept at magnitude 5: timm's own op, unchanged
    assert np.array_equal(np.asarray(posterize_keeping(image, 2)), kept)
    assert posterize_keeping(image, 8) is image


# --- 2. a failing sample in a DataLoader worker ends the job with one line ---------------------------

def test_a_worker_error_exits_non_zero_within_seconds_naming_the_file(tmp_path):
    data = tmp_path / "data"
    make_image_folder(data / "imagenet", train_per_class=2)
    corrupt = data / "imagenet" / "train" / "c03" / "1.png"
    corrupt.write_bytes(corrupt.read_bytes()[:60])  # PIL opens the header, decoding fails
    params = micro_params_file(tmp_path, data, num_workers=2)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "vitpe", "train", "supervised", "--params", str(params),
                           "--experiment", "deit_s", "--out", str(out), "--device", "cpu"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=90)
    assert time.monotonic() - start < 60, "the failed job took too long to exit"
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {corrupt}: decode failed: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not (out / "model.safetensors").exists()


BROKEN_LOADER = """
import sys
import vitpe.train.data as data
get = data.CheckedImageFolder.__getitem__
def broken(self, index):  # a bug (not a data error) in a worker
    if index == 3:
        raise RuntimeError("simulated loader bug")
    return get(self, index)
data.CheckedImageFolder.__getitem__ = broken
from vitpe.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_an_unexpected_loader_error_keeps_its_traceback_and_does_not_hang(tmp_path):
    # the traceback holds the loader iterator; its workers ignore SIGTERM, so unless the engine stops
    # them, multiprocessing's exit handler waits for them forever
    make_image_folder(tmp_path / "data" / "imagenet", train_per_class=2)
    params = micro_params_file(tmp_path, tmp_path / "data", num_workers=2)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", BROKEN_LOADER, "train", "supervised", "--params", str(params),
                           "--experiment", "deit_s", "--out", str(tmp_path / "run"), "--device", "cpu"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "RuntimeError: simulated loader bug" in proc.stderr  # a bug keeps its traceback


# --- 3. --max-steps publishes weights marked as truncated --------------------------------------------

def test_max_steps_publishes_truncated_weights_and_a_rerun_completes(tmp_path):
    make_image_folder(tmp_path / "data" / "imagenet")
    params = micro_params_file(tmp_path, tmp_path / "data", epochs=2)  # 2 x 5 steps
    out = tmp_path / "run"
    argv = ["train", "supervised", "--params", str(params), "--experiment", "deit_s", "--out", str(out),
            "--device", "cpu"]
    assert main([*argv, "--max-steps", "3"]) == 0
    meta = read_metadata(out / "model.safetensors")
    assert meta["truncated"] == {"steps": 3, "total_steps": 10} and meta["experiment"] == "deit_s"
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert torch.load(out / "state" / "state.pt", weights_only=True)["step"] == 3  # kept to continue
    # downstream stages run on the truncated weights
    assert main(["eval", "classify", "--params", str(params), "--experiment", "deit_s", "--device", "cpu",
                 "--weights", str(out / "model.safetensors"), "--out", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["num_images"] == 10
    assert main(argv) == 0  # continues from step 3 to the end
    assert "truncated" not in read_metadata(out / "model.safetensors") and not (out / "state").exists()
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 11))


def test_max_steps_must_be_positive(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "supervised", "--experiment", "deit_s", "--out", str(tmp_path), "--max-steps", "0"])
    assert exit_info.value.code == 2
    assert "expected a positive number of steps, got '0'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


# --- 4. an evaluation that cannot produce its metric fails and writes nothing ------------------------

def _transfer_with_evaluator_output(monkeypatch, evaluated: dict):
    """run_transfer with mmengine's Runner stubbed: training does nothing, test() returns ``evaluated``."""
    from mmengine.runner import Runner

    import vitpe.transfer.runner as runner

    class StubRunner:
        def train(self):
            return None

        def test(self):
            return dict(evaluated)

    from mmengine.config import Config

    config = dict(visualizer=dict(name="visualizer", vis_backends=[dict(type="VitpeLiveBackend")]))
    monkeypatch.setattr(runner, "build_config", lambda *a, **k: Config(config))
    monkeypatch.setattr(Runner, "from_cfg", staticmethod(lambda cfg: StubRunner()))


COCO_KEYS = [f"coco/{kind}_mAP{suffix}" for kind in ("bbox", "segm") for suffix in ("", "_50", "_75", "_s", "_m", "_l")]


@pytest.mark.mm
def test_coco_without_detections_fails_in_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    _transfer_with_evaluator_output(monkeypatch, {})  # what CocoMetric returns when no box passed the threshold
    out, weights = tmp_path / "m" / "coco.json", tmp_path / "w" / "model.safetensors"
    code = main(["transfer", "coco", "--params", str(ROOT / "params.yaml"), "--set", "scale=paper",
                 "--experiment", "mae", "--encoder", str(tmp_path / "e.safetensors"), "--work-dir", str(tmp_path / "w"),
                 "--out", str(out), "--weights-out", str(weights)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: no detections above test_score_thr=0.05; bbox AP cannot be computed "
                   "(undertrained model, or lower transfer.coco.test_score_thr)"]
    assert not out.exists() and not weights.exists()


@pytest.mark.mm
@pytest.mark.parametrize("task, evaluated, message", [
    ("coco", {k: 0.5 for k in COCO_KEYS if "segm" not in k}, "coco: the evaluator returned no coco/segm_mAP"),
    ("coco", {**{k: 0.5 for k in COCO_KEYS}, "coco/bbox_mAP": -1.0}, "coco/bbox_mAP is -1.0"),
    ("ade20k", {"aAcc": 80.0, "mIoU": float("nan"), "mAcc": 50.0}, "ade20k: mIoU is nan"),
    ("ade20k", {"aAcc": 80.0, "mAcc": 50.0}, "ade20k: the evaluator returned no mIoU"),
])
def test_incomplete_or_undefined_metrics_fail(tmp_path, monkeypatch, task, evaluated, message):
    from vitpe.runs import transfer_run
    from vitpe.transfer.runner import run_transfer

    _transfer_with_evaluator_output(monkeypatch, evaluated)
    run = transfer_run(load_params(ROOT / "params.yaml"), task, "mae")
    with pytest.raises(EvaluationError, match=message.replace("(", r"\(")):
        run_transfer(run, tmp_path / "e.safetensors", tmp_path / "w", tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()


@pytest.mark.mm
def test_complete_metrics_keep_the_evaluator_values(tmp_path, monkeypatch):
    from vitpe.runs import transfer_run
    from vitpe.transfer.runner import run_transfer

    # AP_s = -1 is COCO's answer for "no small object in the validation set", not a failure
    evaluated = {**{k: 0.25 for k in COCO_KEYS}, "coco/bbox_mAP_s": -1.0, "coco/segm_mAP_s": -1.0}
    _transfer_with_evaluator_output(monkeypatch, evaluated)
    metrics = run_transfer(transfer_run(load_params(ROOT / "params.yaml"), "coco", "mae"), tmp_path / "e.safetensors",
                           tmp_path / "w", tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == metrics
    assert metrics["coco_ap_box"] == 0.25 and metrics["coco_aps_box"] == -1.0 and metrics["coco_status"] == "ok"


# --- 5, 6. robustness on the data as it is: 15 corruptions, class subsets ---------------------------

def _image(path: Path, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)


def _ranked_weights(path: Path, num_classes: int, first: list[int]) -> Path:
    """Weights of a ViT whose logits ignore the image: ``first`` ranked highest, in order, then the rest."""
    model = build_vit(MICRO_MODEL, num_classes, "learnable", drop_path=0.0)
    bias = torch.full((num_classes,), -float(num_classes))
    for rank, c in enumerate(first):
        bias[c] = -float(rank)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(bias)
    save_weights(model, path, {"model": MICRO_MODEL, "pos_embed": "learnable", "num_classes": num_classes})
    return path


@pytest.fixture(scope="module")
def benchmark_only_c(tmp_path_factory) -> Path:
    """imagenet (10 classes) and an ImageNet-C copy with the 15 benchmark corruptions only."""
    root = tmp_path_factory.mktemp("c15")
    make_image_folder(root / "imagenet", train_per_class=1, val_per_class=1)
    rng = np.random.default_rng(0)
    for corruption in BENCHMARK_CORRUPTIONS:
        for severity in SEVERITIES:
            for name in ("c03", "c04"):
                _image(root / "imagenet-c" / corruption / str(severity) / name / "0.JPEG", rng)
    return root


def test_imagenet_c_with_the_15_benchmark_corruptions_gives_mce_and_names_the_missing_extras(
        benchmark_only_c, tmp_path, capsys):
    weights = _ranked_weights(tmp_path / "model.safetensors", 10, [3])
    out = tmp_path / "robustness.json"
    m = evaluate_robustness(micro_run(benchmark_only_c / "imagenet"), weights, out,
                            {"imagenet_c": benchmark_only_c / "imagenet-c"}, parts=["c"], device="cpu")
    assert json.loads(out.read_text()) == m
    assert m["c_missing_extra_corruptions"] == ", ".join(EXTRA_CORRUPTIONS)
    assert m["c_num_images"] == 15 * 5 * 2 and m["mce_unnorm_15"] == pytest.approx(50.0)  # c03 right, c04 wrong
    assert m["mce"] > 0 and all(f"ce_{c}" in m for c in BENCHMARK_CORRUPTIONS)
    assert "mce_unnorm_19" not in m and "mce_unnorm_extra4" not in m
    err = capsys.readouterr().err
    assert f"extra corruptions not found: {', '.join(EXTRA_CORRUPTIONS)}" in err


@pytest.mark.parametrize("corruptions, missing, why", [
    (None, "fog", "one of the 15 benchmark corruptions"),
    (["fog", "spatter"], "spatter", "requested with --corruptions"),
])
def test_a_missing_required_corruption_fails_naming_it(benchmark_only_c, tmp_path, corruptions, missing, why):
    root = tmp_path / "imagenet-c"
    root.mkdir()
    for corruption in BENCHMARK_CORRUPTIONS:
        if corruption != "fog" or corruptions is not None:
            (root / corruption).symlink_to(benchmark_only_c / "imagenet-c" / corruption)
    out = tmp_path / "robustness.json"
    with pytest.raises(DataError, match=f"^{root / missing}: ImageNet-C corruption folder not found \\({why}"):
        evaluate_robustness(micro_run(benchmark_only_c / "imagenet"), tmp_path / "absent.safetensors", out,
                            {"imagenet_c": root}, parts=["c"], corruptions=corruptions, device="cpu")
    assert not out.exists()


def test_imagenet_a_and_o_class_subsets_of_the_1000_classes_evaluate(tmp_path, capsys):
    all_wnids = list(ImageNetInfo().label_names())  # the sorted 1000 ImageNet wnids
    rng = np.random.default_rng(0)
    data = tmp_path / "imagenet"
    for name in all_wnids:  # the training classes define the logit order; val holds one image each
        (data / "train" / name).mkdir(parents=True)
        _image(data / "val" / name / "0.JPEG", rng)
    a_idx, o_idx = list(IMAGENET_A_INDICES[:3]), list(IMAGENET_O_INDICES[:2])
    for i in a_idx:
        for k in range(2):
            _image(tmp_path / "imagenet-a" / all_wnids[i] / f"{k}.jpg", rng)
    for i in o_idx:
        _image(tmp_path / "imagenet-o" / all_wnids[i] / "0.jpg", rng)
    weights = _ranked_weights(tmp_path / "model.safetensors", 1000, [0, a_idx[1]])  # class 0 is in neither set
    run = dataclasses.replace(micro_run(data), num_classes=1000)
    roots = {"imagenet_a": tmp_path / "imagenet-a", "imagenet_o": tmp_path / "imagenet-o"}
    m = evaluate_robustness(run, weights, tmp_path / "r.json", roots, parts=["a", "o"], device="cpu")
    # the masked prediction is a_idx[1] for every image: 2 of the 6 ImageNet-A images are right
    assert (m["a_num_classes"], m["a_num_images"], m["a_top1"]) == (3, 6, pytest.approx(100 / 3))
    assert (m["o_num_classes"], m["o_num_ood"], m["o_num_id"]) == (2, 2, 2)
    err = capsys.readouterr().err
    assert "3 of the 200 official imagenet_a classes" in err and "2 of the 200 official imagenet_o classes" in err
    # a folder outside the official list (here an ImageNet-O-only class in ImageNet-A) still fails
    foreign = next(i for i in IMAGENET_O_INDICES if i not in IMAGENET_A_INDICES)
    (tmp_path / "imagenet-a" / all_wnids[foreign]).mkdir()
    with pytest.raises(DataError, match=f"{all_wnids[foreign]}: not a class of the official imagenet_a list"):
        subset_mask(all_wnids, tmp_path / "imagenet-a", "imagenet_a")


# --- 7. the setup self-check on a GPU node with a CPU-only mmcv -------------------------------------

def _selfcheck():
    spec = importlib.util.spec_from_file_location("selfcheck", ROOT / "scripts" / "selfcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.mm
def test_selfcheck_on_a_gpu_node_fails_when_mmcv_lacks_cuda_ops(monkeypatch, capsys):
    selfcheck = _selfcheck()
    devices = []
    cpu_ops = selfcheck.run_ops

    def ops(device: str) -> None:
        # "cuda" runs the real ops on meta tensors: this CPU-only mmcv has no kernel for that device
        # either, so its device registry answers as it does for cuda tensors
        devices.append(device)
        cpu_ops("meta" if device == "cuda" else device)

    monkeypatch.setattr(selfcheck, "cuda_available", lambda: True)
    monkeypatch.setattr(selfcheck, "run_ops", ops)
    assert selfcheck.main() == 1
    assert devices == ["cpu", "cuda"]
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        "self-check failed: a CUDA device is visible but mmcv was built without CUDA ops (nms_impl: "
        "implementation for device meta not found.); rebuild with VITPE_MMCV_CUDA=1 make setup"]
    assert "self-check ok" not in captured.out


@pytest.mark.mm
def test_selfcheck_runs_the_cuda_ops_only_where_a_gpu_is_visible(monkeypatch, capsys):
    selfcheck = _selfcheck()
    devices = []
    cpu_ops = selfcheck.run_ops
    monkeypatch.setattr(selfcheck, "run_ops", lambda device: devices.append(device) or cpu_ops("cpu"))
    monkeypatch.setattr(selfcheck, "cuda_available", lambda: False)
    assert selfcheck.main() == 0 and devices == ["cpu"]
    assert "nms and roi_align on CPU" in capsys.readouterr().out
    monkeypatch.setattr(selfcheck, "cuda_available", lambda: True)  # a GPU build: both pass
    assert selfcheck.main() == 0 and devices == ["cpu", "cpu", "cuda"]
    assert "nms and roi_align on CPU and CUDA" in capsys.readouterr().out


def test_mask_head_gives_an_empty_mask_to_a_box_in_the_lsj_padding():
    """mmdet's CPU paste fails on a box wholly outside the original image (it lies in the LSJ padding)."""
    from mmengine.config import ConfigDict
    from mmdet.models.roi_heads.mask_heads import FCNMaskHead

    from vitpe.transfer.mask_paste import OutsideSafeFCNMaskHead

    torch.manual_seed(0)
    cfg = ConfigDict(mask_thr_binary=0.5)
    meta = {"ori_shape": (480, 640), "scale_factor": (1.6, 1.6)}
    preds = torch.randn(3, 80, 28, 28)
    labels = torch.tensor([3, 7, 1])
    # in the image / straddling its right edge / wholly below it (y > 480 after rescaling)
    boxes = torch.tensor([[10.0, 10.0, 300.0, 200.0], [900.0, 100.0, 1100.0, 300.0], [100.0, 800.0, 400.0, 1000.0]])
    with pytest.raises(RuntimeError):
        FCNMaskHead(num_classes=80)._predict_by_feat_single(preds, boxes.clone(), labels, meta, cfg, rescale=True)
    masks = OutsideSafeFCNMaskHead(num_classes=80)._predict_by_feat_single(preds, boxes.clone(), labels, meta, cfg,
                                                                          rescale=True)
    assert masks.shape == (3, 480, 640) and masks.dtype == torch.bool
    assert not masks[2].any()  # the box in the padding: an empty mask, as mmdet's GPU paste gives
    expected = FCNMaskHead(num_classes=80)._predict_by_feat_single(preds[:2], boxes[:2].clone(), labels[:2], meta,
                                                                   cfg, rescale=True)
    assert torch.equal(masks[:2], expected) and masks[0].any()
