"""The claims table: each paper claim's seed-paired difference and its verdict."""
from __future__ import annotations

import copy
import json

import pytest

from conftest import ROOT
from vitpe.config import load_params
from vitpe.report.claims import CLAIMS, NOT_SUPPORTED, NOT_TESTABLE, SUPPORTED, claims_frame, evaluate_claims

BASE = load_params(ROOT / "params.yaml")
SEEDS = [0, 1, 2]
SUPERVISED = ("deit_s", "naive_shuffle", "mjp")
# per model, per metric file: one value per seed
VALUES = {
    "deit_s": {"classify": {"top1": [70.0, 71.0, 72.0]},
               "robustness": {"mce": [80.0, 81.0, 79.0], "a_top1": [10.0, 12.0, 11.0], "o_aupr": [30.0, 31.0, 32.0]},
               "shuffle": {"consistency_agreement": [0.50, 0.52, 0.51]},
               "attacks": {"pe_gradient_plain_psnr_mean": [40.0, 41.0, 42.0],
                           "pe_gradient_adaptive_shuffled_psnr_kept_mean": [55.0, 56.0, 57.0],
                           "inverting_gradients_shuffled_psnr_mean": [15.0, 15.5, 16.0]}},
    "naive_shuffle": {"classify": {"top1": [40.0, 42.0, 41.0]},
                      "attacks": {"inverting_gradients_shuffled_psnr_mean": [14.0, 14.5, 15.0]}},
    "mjp": {"classify": {"top1": [80.0, 81.0, 82.0]},
            "robustness": {"mce": [85.0, 86.0, 84.0], "a_top1": [11.0, 11.0, 11.5], "o_aupr": [35.0, 36.0, 37.0]},
            "shuffle": {"consistency_agreement": [0.70, 0.71, 0.72]},
            "attacks": {"pe_gradient_adaptive_shuffled_psnr_kept_mean": [20.0, 21.0, 22.0],
                        "inverting_gradients_shuffled_psnr_mean": [14.5, 15.0, 15.5]}},
}


def _params(seeds=SEEDS) -> dict:
    params = copy.deepcopy(BASE)
    params["experiments"] = {"supervised": list(SUPERVISED), "pretrain": [], "transfer": []}
    params["attacks"].update(models=list(SUPERVISED), finetuned=[], optimisation=["inverting_gradients"],
                             standard_closed_form=["pe_gradient", "pe_gradient_adaptive"])
    params["scales"]["tiny"]["seeds"] = list(seeds)
    return params


def _write(root, values=VALUES, seeds=SEEDS):
    for exp, files in values.items():
        for source, metrics in files.items():
            for i, seed in enumerate(seeds):
                path = root / "tiny" / f"seed{seed}" / exp / f"{source}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({key: per_seed[i] for key, per_seed in metrics.items()}))


def _results(params, root, seeds=SEEDS) -> dict[str, object]:
    return {r.claim.text + " / " + r.claim.metric: r for r in evaluate_claims(params, root / "tiny", seeds)}


def test_verdicts_follow_the_seed_paired_ci(tmp_path):
    _write(tmp_path)
    results = _results(_params(), tmp_path)
    top1 = results["MJP improves accuracy / Top-1 (%)"]
    assert top1.verdict == SUPPORTED and top1.difference.mean == pytest.approx(10.0) and top1.difference.n == 3
    assert top1.difference.ci_low <= 10.0 <= top1.difference.ci_high
    assert results["MJP improves robustness to corruptions / ImageNet-C mCE"].verdict == NOT_SUPPORTED  # mCE rose
    # differences +1, -1, +0.5: the CI straddles 0
    a_top1 = results["MJP improves natural adversarial accuracy / ImageNet-A top-1 (%)"]
    assert a_top1.verdict == NOT_SUPPORTED and a_top1.difference.ci_low < 0 < a_top1.difference.ci_high
    agreement = results["MJP improves consistency under shuffled input / Agreement (%)"]
    assert agreement.verdict == SUPPORTED and agreement.difference.mean == pytest.approx(20.0)
    assert results["Naive shuffling costs accuracy / Top-1 (%)"].verdict == SUPPORTED
    # the level claim: DeiT-S's PE-gradient PSNR against the 20 dB success threshold
    leak = results["Position embeddings leak the input under gradient inversion / PE-grad PSNR, original client (dB)"]
    assert leak.verdict == SUPPORTED and leak.difference.mean == pytest.approx(21.0)


def test_not_testable_when_a_precondition_fails(tmp_path):
    _write(tmp_path)
    results = _results(_params(), tmp_path)
    # IG reconstructs nothing from DeiT-S (15.5 dB < 20 dB): no privacy difference is measurable
    ig = results["MJP reduces gradient leakage / IG PSNR, shuffled client (dB)"]
    assert ig.verdict == NOT_TESTABLE and "does not reconstruct DeiT-S" in ig.note and ig.difference is not None
    # the AdPE claims need models absent from the experiments
    adpe = [r for r in results.values() if r.claim.paper == "AdPE"]
    assert adpe and all(r.verdict == NOT_TESTABLE and r.note == "model not in experiments" for r in adpe)
    # saturated accuracy: both means at or above 99 %
    saturated = copy.deepcopy(VALUES)
    saturated["deit_s"]["classify"]["top1"] = [99.0, 99.5, 100.0]
    saturated["mjp"]["classify"]["top1"] = [100.0, 100.0, 100.0]
    _write(tmp_path, saturated)
    top1 = _results(_params(), tmp_path)["MJP improves accuracy / Top-1 (%)"]
    assert top1.verdict == NOT_TESTABLE and "saturated" in top1.note


def test_verdict_flips_when_the_attack_reconstructs(tmp_path):
    values = copy.deepcopy(VALUES)
    values["deit_s"]["attacks"]["inverting_gradients_shuffled_psnr_mean"] = [25.0, 26.0, 27.0]
    values["mjp"]["attacks"]["inverting_gradients_shuffled_psnr_mean"] = [21.0, 21.5, 22.0]
    values["deit_s"]["attacks"]["pe_gradient_plain_psnr_mean"] = [15.0, 16.0, 25.0]  # mean 18.7 dB
    _write(tmp_path, values)
    results = _results(_params(), tmp_path)
    assert results["MJP reduces gradient leakage / IG PSNR, shuffled client (dB)"].verdict == SUPPORTED
    leak = "Position embeddings leak the input under gradient inversion / PE-grad PSNR, original client (dB)"
    assert results[leak].verdict == NOT_SUPPORTED
    # without the attack configured, its claims are not testable
    params = _params()
    params["attacks"]["optimisation"] = []
    ig = _results(params, tmp_path)["MJP reduces gradient leakage / IG PSNR, shuffled client (dB)"]
    assert ig.verdict == NOT_TESTABLE and "not in the attack lists" in ig.note


def test_one_seed_decides_on_the_difference_alone(tmp_path):
    _write(tmp_path, seeds=[0])
    results = _results(_params([0]), tmp_path, [0])
    top1 = results["MJP improves accuracy / Top-1 (%)"]
    assert top1.verdict == SUPPORTED and top1.difference.ci_low is None and top1.difference.n == 1
    a_top1 = results["MJP improves natural adversarial accuracy / ImageNet-A top-1 (%)"]
    assert a_top1.verdict == SUPPORTED and a_top1.difference.mean == pytest.approx(1.0)  # seed 0 alone: +1


def test_claims_frame_prints_display_names_ci_and_seeds(tmp_path):
    _write(tmp_path)
    frame = claims_frame(_params(), tmp_path / "tiny", SEEDS)
    assert len(frame) == len(CLAIMS) == 18  # 14 paper claims, 4 PE-init ablation rows
    assert list(frame.columns) == ["Paper", "Claim", "Comparison", "Metric", "Measured difference", "Seeds",
                                   "Verdict", "Note"]
    row = frame[frame["Claim"] == "MJP improves accuracy"].iloc[0]
    assert row["Comparison"] == "MJP - DeiT-S" and row["Seeds"] == "3" and row["Verdict"] == SUPPORTED
    assert row["Measured difference"].startswith("+10.00 [")
    leak = frame[frame["Comparison"] == "DeiT-S - 20 dB"].iloc[0]
    assert leak["Measured difference"].startswith("+21.00 [")
    assert set(frame[frame["Paper"] == "AdPE"]["Seeds"]) == {""}  # nothing measured
    ablation = frame[frame["Paper"] == "MJP ablation"]  # the ablation models are not in these experiments
    assert set(ablation["Verdict"]) == {"not testable at this scale"}
