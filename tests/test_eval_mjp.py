"""MJP evaluations: shuffled-input accuracy and consistency, ImageNet-C/-A/-O metrics, PE probes, CLI."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from conftest import MICRO_MODEL, NUM_CLASSES, make_image_folder, micro_params_file, micro_run
from vitpe.cli import main
from vitpe.data.subsets import ALL_CORRUPTIONS, BENCHMARK_CORRUPTIONS, SEVERITIES
from vitpe.errors import DataError
from vitpe.evaluate.classification import evaluate_classification
from vitpe.data.transforms import center_crop_transform, squash_transform
from vitpe.data.hendrycks_lists import IMAGENET_A_INDICES, IMAGENET_O_INDICES, official_wnids
from vitpe.evaluate.pe_probe import (absolute_probe, evaluate_pe_probe, probe_metrics, relative_targets)
from vitpe.evaluate.robustness import evaluate_robustness, subset_mask
from vitpe.evaluate.robustness_metrics import (aurra, corruption_summary, fpr_at_recall, ood_measures,
                                               rms_calibration_error)
from vitpe.evaluate.shuffled import (evaluate_shuffle, mask_seed, mjp_draws, prediction_consistency,
                                     shuffled_accuracies, shuffled_accuracy)
from vitpe.mjp.forward import ShuffledForward
from vitpe.evaluate.common import eval_loader
from vitpe.train.data import build_eval_loader, image_folder
from vitpe.mjp.jigsaw import Jigsaw, shuffle_pixels
from vitpe.models import build_vit
from vitpe.models.pos_embed import sincos_2d_table
from vitpe.models.weights import save_weights

# canonical AlexNet mean errors, order gaussian ... jpeg (google-research/augmix imagenet.py, ALEXNET_ERR),
# typed independently
ALEXNET = [0.886428, 0.894468, 0.922640, 0.819880, 0.826268, 0.785948, 0.798360, 0.866816, 0.826572,
           0.819324, 0.564592, 0.853204, 0.646056, 0.717840, 0.606500]
GRID = MICRO_MODEL["img_size"] // MICRO_MODEL["patch_size"]
C_CLASSES, A_CLASSES, O_CLASSES = ("c03", "c04", "c05"), ("c02", "c05", "c07"), ("c01", "c05")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """root/imagenet (10 classes, 2 val images each) plus ImageNet-C/-A/-O-style folders."""
    root = tmp_path_factory.mktemp("data")
    make_image_folder(root / "imagenet", train_per_class=1, val_per_class=2)
    rng = np.random.default_rng(1)

    def image(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)

    for corruption in ALL_CORRUPTIONS:
        for severity in SEVERITIES:
            for name in C_CLASSES:
                image(root / "imagenet-c" / corruption / str(severity) / name / "0.JPEG")
    for name in A_CLASSES:
        for i in range(2):
            image(root / "imagenet-a" / name / f"{i}.jpg")
    for name in O_CLASSES:
        for i in range(3):
            image(root / "imagenet-o" / name / f"{i}.jpg")
    return root


def _ranked(order: list[int], pos_embed: str = "learnable") -> nn.Module:
    """A ViT whose logits ignore the image and rank the classes in ``order``."""
    model = build_vit(MICRO_MODEL, NUM_CLASSES, pos_embed, drop_path=0.0)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([-float(order.index(c)) for c in range(NUM_CLASSES)]))
    return model


def _save(model: nn.Module, path: Path, pos_embed: str = "learnable") -> Path:
    save_weights(model, path, {"model": MICRO_MODEL, "pos_embed": pos_embed, "num_classes": NUM_CLASSES})
    return path


# --- shuffled accuracy ------------------------------------------------------------------------------

class PositionReader(nn.Module):
    """Class k = "the bright patch is at grid position k": logits are the (shuffled) patch means."""

    def __init__(self, patch: int) -> None:
        super().__init__()
        self.patch = patch

    def forward(self, images: torch.Tensor, jigsaw: Jigsaw | None = None) -> torch.Tensor:
        if jigsaw is not None:
            images = shuffle_pixels(images, jigsaw, self.patch)
        return nn.functional.avg_pool2d(images.mean(1, keepdim=True), self.patch).flatten(1)


def _position_batches(grid: int, patch: int, per_class: int, batch: int) -> list:
    gen = torch.Generator().manual_seed(0)
    n = grid * grid
    targets = torch.arange(n).repeat(per_class)[torch.randperm(n * per_class, generator=gen)]
    images = 0.1 * torch.rand(len(targets), 3, grid * patch, grid * patch, generator=gen)
    for i, k in enumerate(targets.tolist()):
        r, c = divmod(k, grid)
        images[i, :, r * patch:(r + 1) * patch, c * patch:(c + 1) * patch] += 1.0
    return [(images[i:i + batch], targets[i:i + batch]) for i in range(0, len(targets), batch)]


def test_shuffled_accuracy_of_a_position_reading_model_falls_with_the_ratio():
    grid, patch = 6, 2
    batches = _position_batches(grid, patch, per_class=6, batch=8)
    model = PositionReader(patch)
    results = {r: shuffled_accuracy(model, batches, mjp_draws(grid, r, seed=0)) for r in (0.0, 0.3, 0.6, 0.9)}
    top1 = [results[r]["top1"] for r in sorted(results)]
    assert top1[0] == 100.0 and results[0.0]["shuffled_fraction"] == 0.0
    assert top1 == sorted(top1, reverse=True) and len(set(top1)) == 4, top1
    assert top1[-1] < 40.0
    for r in (0.3, 0.6, 0.9):  # the block sampler selects at most int(N * r) positions, often slightly fewer
        assert r - 0.2 < results[r]["shuffled_fraction"] <= r
    again = shuffled_accuracy(model, batches, mjp_draws(grid, 0.6, seed=0))
    assert again == results[0.6]  # seeded draws: reproducible
    assert results[0.0]["num_images"] == 216


def test_masks_of_one_ratio_are_independent_draws_evaluated_in_one_pass():
    grid, patch, masks = 6, 2, 4
    batches = _position_batches(grid, patch, per_class=2, batch=8)
    model = PositionReader(patch)

    def draws(seed: int) -> dict:
        return {m: mjp_draws(grid, 0.5, mask_seed(seed, 1, 0.5, m)) for m in range(masks)}

    first = [draws(0)[m](1).order for m in range(masks)]
    assert not torch.equal(first[0], first[1])  # two masks of one ratio differ
    assert all(torch.equal(a, draws(0)[m](1).order) for m, a in enumerate(first))  # seeded: reproducible
    assert not torch.equal(first[0], draws(1)[0](1).order)  # the run seed enters every mask
    together = shuffled_accuracies(model, batches, draws(0))
    # one pass over the batches gives each mask exactly what a pass of its own gives
    assert together == {m: shuffled_accuracy(model, batches, draw) for m, draw in draws(0).items()}
    assert len({acc["top1"] for acc in together.values()}) > 1  # the masks move the accuracy


def test_shuffle_metrics_are_means_over_masks_and_ratio_zero_is_the_clean_accuracy(data_root, tmp_path):
    torch.manual_seed(5)
    vit = build_vit(MICRO_MODEL, NUM_CLASSES, "learnable", 0.0).eval()
    weights = _save(vit, tmp_path / "model.safetensors")
    run = dataclasses.replace(micro_run(data_root / "imagenet"), seed=7)
    clean = evaluate_classification(run, weights, tmp_path / "clean.json", device="cpu")
    m = evaluate_shuffle(run, weights, tmp_path / "shuffle.json", ratios=[0.0, 0.5], masks=5, device="cpu")
    assert json.loads((tmp_path / "shuffle.json").read_text()) == m
    assert m["shuffled_top1_r0.00"] == clean["top1"] and m["shuffled_top1_r0.00_std"] == 0.0
    assert m["shuffled_fraction_r0.00"] == 0.0 and m["shuffle_masks"] == 5
    # each mask on its own, seeded by (run seed, sweep stream, ratio, mask index)
    loader = build_eval_loader(run.val_dir, run.recipe, 16, NUM_CLASSES, run.runtime.eval_batch_size, 0)
    alone = [shuffled_accuracy(ShuffledForward(vit), loader, mjp_draws(GRID, 0.5, mask_seed(7, 1, 0.5, i)))
             for i in range(5)]
    top1 = [acc["top1"] for acc in alone]
    assert m["shuffled_top1_r0.50"] == np.mean(top1) and m["shuffled_top1_r0.50_std"] == np.std(top1, ddof=1)
    assert m["shuffled_top5_r0.50"] == np.mean([acc["top5"] for acc in alone])
    assert 0.0 < m["shuffled_fraction_r0.50"] <= 0.5
    # consistency: the same means over masks, drawn from their own stream
    squashed = eval_loader(image_folder(run.val_dir, squash_transform(16)), run, torch.device("cpu"))
    cons = [prediction_consistency(vit, squashed, mjp_draws(GRID, 0.5, mask_seed(7, 2, 0.5, i))) for i in range(5)]
    assert m["consistency_l2"] == np.mean([c["l2"] for c in cons]) > 0.0
    assert m["consistency_agreement"] == np.mean([c["agreement"] for c in cons])
    assert m["consistency_l2_std"] == np.std([c["l2"] for c in cons], ddof=1)
    one = evaluate_shuffle(run, weights, tmp_path / "one.json", ratios=[0.5], masks=1, device="cpu")
    assert one["shuffled_top1_r0.50"] == top1[0] and one["shuffled_top1_r0.50_std"] == 0.0  # mask 0 is shared


def test_consistency_of_an_identity_shuffle_is_perfect_and_unk_reaches_only_the_mjp_pe():
    torch.manual_seed(0)
    images = torch.randn(6, 3, 16, 16)
    n = GRID * GRID

    def identity(unk: bool):
        return lambda rows: Jigsaw(order=torch.arange(n).expand(rows, n).clone(),
                                   unk=torch.full((rows, n), unk))

    batches = [(images[:4], None), (images[4:], None)]
    for pe in ("learnable", "mjp"):
        model = build_vit(MICRO_MODEL, NUM_CLASSES, pe, drop_path=0.0).eval()
        same = prediction_consistency(model, batches, identity(False))
        assert same == {"l2": 0.0, "agreement": 1.0, "num_images": 6}
        # every position marked unknown but nothing moved: only the MJP PE changes (all rows -> unk)
        marked = prediction_consistency(model, batches, identity(True))
        assert (marked["l2"] == 0.0) == (pe == "learnable")
    shuffled = prediction_consistency(model, batches, mjp_draws(GRID, 0.5, seed=0))
    assert shuffled["l2"] > 0.0 and 0.0 <= shuffled["agreement"] <= 1.0


def test_cli_shuffle_ratio_zero_equals_clean_accuracy(data_root, tmp_path, capsys):
    torch.manual_seed(3)
    weights = _save(build_vit(MICRO_MODEL, NUM_CLASSES, "learnable", 0.0), tmp_path / "model.safetensors")
    clean = evaluate_classification(micro_run(data_root / "imagenet"), weights, tmp_path / "clean.json", device="cpu")
    params = micro_params_file(tmp_path, data_root)
    out = tmp_path / "res" / "shuffle.json"
    args = ["eval", "shuffle", "--params", str(params), "--experiment", "deit_s", "--weights", str(weights),
            "--out", str(out), "--device", "cpu", "--ratios", "0", "0.5", "0.9"]
    assert main(args) == 0
    metrics = json.loads(out.read_text())
    assert metrics["shuffled_top1_r0.00"] == clean["top1"] and metrics["shuffled_top5_r0.00"] == clean["top5"]
    assert {"shuffled_top1_r0.50", "shuffled_top1_r0.90", "shuffled_fraction_r0.90", "consistency_l2",
            "consistency_agreement"} <= set(metrics)
    assert metrics["consistency_ratio"] == 0.5 and metrics["num_images"] == 20 and metrics["scale"] == "tiny"
    assert all(isinstance(v, (int, float, str)) for v in metrics.values())  # flat (DVC metrics)
    assert "shuffled top-1 by ratio" in capsys.readouterr().out
    out.unlink()
    assert main(args) == 0 and json.loads(out.read_text()) == metrics  # reproducible


# --- ImageNet-C / -A / -O metrics -------------------------------------------------------------------

def test_mce_arithmetic_on_a_hand_built_error_matrix():
    # error (%) = 10 * severity + index of the corruption: mean over severities = 30 + index
    errors = {(c, s): 10.0 * s + i for i, c in enumerate(ALL_CORRUPTIONS) for s in SEVERITIES}
    out = corruption_summary(errors)
    assert out["err_glass_blur_4"] == 44.0 and out["ce_unnorm_saturate"] == 48.0
    assert out["ce_gaussian_noise"] == pytest.approx(30 / 0.886428)
    assert out["ce_jpeg_compression"] == pytest.approx(44 / 0.606500)
    assert out["mce"] == pytest.approx(48.455113315318656)  # mean_i (30 + i) / AlexNet_i, by hand
    assert out["mce"] == pytest.approx(np.mean([(30 + i) / a for i, a in enumerate(ALEXNET)]))
    assert out["mce_unnorm_15"] == 37.0 and out["mce_unnorm_19"] == 39.0
    assert out["mce_unnorm_extra4"] == 46.5 and out["mce_unnorm_mjp5"] == 32.0
    assert "ce_speckle_noise" not in out  # extras have no AlexNet normalisation
    assert len([k for k in out if k.startswith("err_")]) == 95
    flat = corruption_summary({(c, s): 50.0 for c in BENCHMARK_CORRUPTIONS for s in SEVERITIES})
    assert flat["mce"] == pytest.approx(64.6725729991934) and "mce_unnorm_19" not in flat
    five = corruption_summary({(c, s): 1.0 for c in ALL_CORRUPTIONS[:5] for s in SEVERITIES})
    assert set(k for k in five if k.startswith("mce")) == {"mce_unnorm_mjp5"}
    with pytest.raises(ValueError, match="lack severity 3"):
        corruption_summary({("fog", s): 1.0 for s in (1, 2, 4, 5)})


def _hendrycks_fpr(labels: np.ndarray, scores: np.ndarray, level: float = 0.95) -> float:
    """Hendrycks' calibration_tools.fpr_and_fdr_at_recall, transcribed with its appended (recall 1,
    FPR 0) point."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    s, y = scores[order], labels[order].astype(bool)
    idx = np.r_[np.where(np.diff(s))[0], len(y) - 1]
    tps = np.cumsum(y)[idx]
    fps = 1 + idx - tps
    recall = tps / tps[-1]
    last = tps.searchsorted(tps[-1])
    recall, fps = np.r_[recall[last::-1], 1], np.r_[fps[last::-1], 0]
    return fps[np.argmin(np.abs(recall - level))] / np.sum(~y)


def test_ood_measures_match_hand_values_and_sklearn():
    ood, ind = np.array([0.9, 0.8, 0.4]), np.array([0.7, 0.3, 0.2, 0.1])
    m = ood_measures(ood, ind)
    assert m["aupr"] == pytest.approx((1 + 1 + 3 / 4) / 3)  # precision at each OOD hit, averaged
    assert m["auroc"] == pytest.approx(11 / 12)  # 11 of 12 (OOD, ID) pairs ordered correctly
    assert m["fpr95"] == 0.25  # full recall first reached at 0.4, above one of four ID scores
    # recall exactly 0.95 at three thresholds (FPR 0, 1/3, 2/3): Hendrycks takes the lowest of them
    plateau = ood_measures(np.r_[np.arange(10.0, 29.0), -5.0], np.array([5.0, 3.0, -10.0]))
    assert plateau["fpr95"] == pytest.approx(2 / 3)
    tied = ood_measures(np.zeros(3), np.zeros(5))
    assert tied == {"auroc": 0.5, "aupr": 3 / 8, "fpr95": 1.0}
    rng = np.random.default_rng(0)
    for size in [60] * 20 + [3, 4, 5, 8] * 25:  # tiny sets too: no real point near 95 % recall
        labels = rng.integers(0, 2, size)
        scores = rng.integers(0, 12, size).astype(float)  # many ties
        if 0 < labels.sum() < size:
            # the appended point ties with the first full-recall point, which precedes it: never chosen
            assert fpr_at_recall(labels, scores) == pytest.approx(_hendrycks_fpr(labels, scores))


def _hendrycks_calib_err(confidence: np.ndarray, correct: np.ndarray, beta: int = 100) -> float:
    """Hendrycks' calibration_tools.calib_err(p='2'), transcribed (the loop skips the last bin)."""
    idxs = np.argsort(confidence, kind="stable")
    confidence, correct = confidence[idxs], correct[idxs]
    bins = [[i * beta, (i + 1) * beta] for i in range(len(confidence) // beta)]
    bins[-1] = [bins[-1][0], len(confidence)]
    cerr = 0.0
    for i in range(len(bins) - 1):
        lo, hi = bins[i]
        difference = np.abs(np.nanmean(confidence[lo:hi]) - np.nanmean(correct[lo:hi]))
        cerr += (hi - lo) / len(confidence) * np.square(difference)
    return float(np.sqrt(cerr))


def test_calibration_error_and_aurra_match_hand_values():
    conf = np.r_[np.full(100, 0.9), np.full(100, 0.6)]
    correct = np.r_[np.arange(100) < 80, np.arange(100) < 50].astype(float)
    # both bins off by 0.1; the reference counts only the first (least confident) one
    assert rms_calibration_error(conf, correct) == pytest.approx(np.sqrt(0.005))
    assert rms_calibration_error(conf, correct, drop_last_bin=False) == pytest.approx(0.1)
    # fewer than beta samples (the reference raises IndexError): one bin, counted
    assert rms_calibration_error(np.array([0.7, 0.7]), np.array([1.0, 0.0])) == pytest.approx(0.2)
    rng = np.random.default_rng(0)
    for n in (100, 199, 250, 1000, 7500):
        confidence = rng.uniform(0.2, 1.0, n)
        hits = (rng.uniform(size=n) < confidence ** 2).astype(float)
        assert rms_calibration_error(confidence, hits) == pytest.approx(_hendrycks_calib_err(confidence, hits))
    assert aurra(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1])) == pytest.approx((1 + 1 / 2 + 2 / 3) / 3)


def test_robustness_masks_logits_and_uses_ood_as_positive(data_root, tmp_path):
    # rank: class 3 first overall, then 5, 2, 7, ...: among the A mask {2, 5, 7} class 5 wins
    weights = _save(_ranked([3, 5, 2, 7, 1, 0, 4, 6, 8, 9]), tmp_path / "model.safetensors")
    roots = {"imagenet_c": data_root / "imagenet-c", "imagenet_a": data_root / "imagenet-a",
             "imagenet_o": data_root / "imagenet-o"}
    out = tmp_path / "robustness.json"
    m = evaluate_robustness(micro_run(data_root / "imagenet"), weights, out, roots, device="cpu")
    assert json.loads(out.read_text()) == m
    # ImageNet-C: always class 3; one image of each of c03, c04, c05 per set -> 2/3 wrong everywhere
    assert m["err_fog_2"] == pytest.approx(200 / 3) and m["c_num_images"] == 19 * 5 * 3
    assert m["mce"] == pytest.approx(np.mean([(200 / 3) / a for a in ALEXNET]))
    assert m["mce_unnorm_15"] == pytest.approx(200 / 3) and m["mce_unnorm_19"] == pytest.approx(200 / 3)
    assert m["c_missing_extra_corruptions"] == ""  # all 19 present
    # ImageNet-A: prediction restricted to the mask -> always c05, 2 of 6 images
    assert m["a_top1"] == pytest.approx(100 / 3) and (m["a_num_images"], m["a_num_classes"]) == (6, 3)
    # ImageNet-O: constant scores -> AUROC 50, AUPR = share of OOD images (positive class), FPR95 100
    assert (m["o_num_ood"], m["o_num_id"], m["o_num_classes"]) == (6, 4, 2)  # ID: val images of c01, c05
    assert m["o_auroc"] == pytest.approx(50.0) and m["o_aupr"] == pytest.approx(60.0)
    assert m["o_fpr95"] == pytest.approx(100.0)
    only_a = evaluate_robustness(micro_run(data_root / "imagenet"), weights, tmp_path / "a.json",
                                 {"imagenet_a": roots["imagenet_a"]}, parts=["a"], device="cpu")
    assert set(only_a) == {"a_top1", "a_calib_rms", "a_aurra", "a_num_images", "a_num_classes", "scale"}


def test_evaluation_transforms_follow_the_protocols():
    pixels = np.random.default_rng(0).integers(0, 255, (16, 24, 3), dtype=np.uint8)
    picture = Image.fromarray(pixels)
    mean, std = torch.tensor(IMAGENET_DEFAULT_MEAN)[:, None, None], torch.tensor(IMAGENET_DEFAULT_STD)[:, None, None]
    # ImageNet-C: the central 16 x 16 pixels as they are (no resampling)
    cropped = center_crop_transform(16)(picture)
    expected = (torch.from_numpy(pixels[:, 4:20]).permute(2, 0, 1) / 255.0 - mean) / std
    assert torch.allclose(cropped, expected, atol=1e-6)
    # consistency.py: the whole image squashed to 16 x 16, nothing cropped away
    squashed = squash_transform(16)(picture)
    assert squashed.shape == (3, 16, 16)
    assert not torch.allclose(squashed, expected, atol=1e-2)


def test_official_200_class_lists_and_the_paper_scale_mask_check(tmp_path):
    assert len(set(IMAGENET_A_INDICES)) == len(set(IMAGENET_O_INDICES)) == 200
    assert list(IMAGENET_A_INDICES) == sorted(IMAGENET_A_INDICES) and max(IMAGENET_O_INDICES) < 1000
    assert len(set(IMAGENET_A_INDICES) & set(IMAGENET_O_INDICES)) == 59  # natural-adv-examples' lists
    info = Path(__import__("timm").__file__).parent / "data" / "_info"  # timm ships ImageNet-A's lists
    assert [int(v) for v in (info / "imagenet_a_indices.txt").read_text().split()] == list(IMAGENET_A_INDICES)
    assert official_wnids("imagenet_a") == (info / "imagenet_a_synsets.txt").read_text().split()
    assert len(set(official_wnids("imagenet_o"))) == 200
    wnids = [f"n{i:08d}" for i in range(1000)]
    for i in IMAGENET_O_INDICES:
        (tmp_path / "o" / wnids[i]).mkdir(parents=True)
    assert subset_mask(wnids, tmp_path / "o", "imagenet_o") == list(IMAGENET_O_INDICES)
    shutil.rmtree(tmp_path / "o" / wnids[IMAGENET_O_INDICES[7]])  # a class subset evaluates over its classes
    assert subset_mask(wnids, tmp_path / "o", "imagenet_o") == [i for i in IMAGENET_O_INDICES if i != IMAGENET_O_INDICES[7]]
    (tmp_path / "o" / wnids[0]).mkdir()  # not an ImageNet-O class: a renamed or swapped set
    with pytest.raises(DataError, match="not a class of the official imagenet_o list"):
        subset_mask(wnids, tmp_path / "o", "imagenet_o")


# --- PE probes --------------------------------------------------------------------------------------

def test_probe_recovers_positions_from_sincos_but_not_from_a_random_table():
    grid = 8
    sincos = sincos_2d_table(grid, 32)[1:].double().numpy()
    good = probe_metrics(sincos, grid, seed=0)
    assert good["abs_1d_mae"] < 0.05 and good["abs_2d_mae"] < 0.05
    # the 2D sin-cos table is separable: rank <= 2 * grid - 1, the rest of the spectrum vanishes
    assert good["sv_014"] > 1e-8 * good["sv_000"] and good["sv_015"] < 1e-12 * good["sv_000"]
    assert len([k for k in good if k.startswith("sv_") and k[3:].isdigit()]) == 32
    random_table = np.random.default_rng(0).normal(size=(grid * grid, 32))
    bad = absolute_probe(random_table, grid, seed=0)
    assert bad["abs_1d_mae"] > 8.0 and bad["abs_2d_mae"] > 1.0  # guessing the mean: 16 and 2
    assert good["sv_effective_rank"] < probe_metrics(random_table, grid)["sv_effective_rank"]


def test_relative_targets_use_signed_differences():
    a, b = np.array([0, 13, 27], dtype=np.uint8), np.array([13, 0, 0], dtype=np.uint8)
    d1, d2 = relative_targets(a, b, grid=14)
    assert d1.tolist() == [13, 13, 27]  # uint8 arithmetic would give 243 for 0 - 13
    assert d2.tolist() == [[0, 13], [0, 13], [1, 13]]


def test_pe_probe_cli_writes_metrics_or_a_recorded_reason(data_root, tmp_path, capsys):
    params = micro_params_file(tmp_path, data_root)
    weights = _save(build_vit(MICRO_MODEL, NUM_CLASSES, "learnable", 0.0), tmp_path / "model.safetensors")
    out = tmp_path / "probe.json"
    base = ["eval", "pe-probe", "--params", str(params), "--weights"]
    assert main(base + [str(weights), "--experiment", "deit_s", "--out", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m["status"] == "ok" and m["num_positions"] == GRID * GRID and m["sv_000"] > 0
    none = _save(build_vit(MICRO_MODEL, NUM_CLASSES, "none", 0.0), tmp_path / "none.safetensors", "none")
    run = dataclasses.replace(micro_run(data_root / "imagenet"), pos_embed="none")
    skipped = evaluate_pe_probe(run, none, tmp_path / "none.json")
    assert skipped["status"] == "skipped" and "has no position-embedding table" in skipped["reason"]
    assert json.loads((tmp_path / "none.json").read_text()) == skipped


# --- CLI failures -----------------------------------------------------------------------------------

@pytest.mark.parametrize("command, extra, message", [
    ("shuffle", [], "weights file not found"),
    ("robustness", [], "weights file not found"),
    ("pe-probe", [], "weights file not found"),
    ("robustness", ["--data-root", "nowhere"], "imagenet-c dataset not found"),
    ("shuffle", ["--ratios", "1.5"], "outside [0, 1]"),
])
def test_cli_failures_exit_2_with_one_line_and_write_nothing(data_root, tmp_path, capsys, command, extra, message):
    params = micro_params_file(tmp_path, data_root)
    weights = tmp_path / "absent.safetensors"
    if extra:  # these fail on their inputs, not on the weights
        weights = _save(_ranked(list(range(NUM_CLASSES))), tmp_path / "model.safetensors")
    if extra[:1] == ["--data-root"]:  # an override as Snakemake would pass it; the rest of `data` is kept
        extra = ["--set", f"data={{'embedded': {{'root': '{tmp_path / extra[1]}'}}}}"]
    out = tmp_path / "out" / "m.json"
    argv = ["eval", command, "--params", str(params), "--experiment", "deit_s", "--weights", str(weights),
            "--out", str(out), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not out.parent.exists()
