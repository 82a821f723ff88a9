"""The papers' qualitative claims as data, each tested on this run's metrics over seeds.

A claim compares two models on one metric (MJP paper, arXiv 2205.12551; AdPE paper, arXiv 2303.07598)
or, for the leakage claim, one model against the success threshold fixed in advance
(attacks.metrics.success_psnr, docs/FIDELITY.md row 49). The measured difference is the mean of the
seed-paired differences with a 95 % Student-t CI (vitpe.report.statistics); the verdict is
"supported" only when that CI (with one seed: the difference) lies entirely on the claimed side of 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from vitpe.config import seed_dir
from vitpe.report.names import attack_name, experiment_name
from vitpe.report.statistics import PairedDifference, pair_by_seed, paired_difference, seed_values, summarize

SUPPORTED, NOT_SUPPORTED, NOT_TESTABLE = "supported", "not supported", "not testable at this scale"
SATURATED_TOP1 = 99.0  # percent: both models at or above it leave no room for a difference


@dataclass(frozen=True)
class Claim:
    paper: str
    text: str
    a: str  # the model the claim is about
    b: str | None  # the model it is compared with; None: a level claim against attacks.metrics.success_psnr
    metric: str  # display name, with its unit
    source: str  # metrics file kind (e.g. "classify")
    key: str  # key in that file
    direction: int  # +1: a above b (or the threshold); -1: a below b
    needs: str  # the list that must hold the models: supervised | pretrain | transfer | attacks
    factor: float = 1.0  # display factor (fractions -> percent)
    attack: str | None = None  # the attack the metric comes from (must be configured)
    optimisation: bool = False  # an optimisation attack: b must be reconstructed (mean PSNR >= success_psnr)
    accuracy: bool = False  # a top-1 metric: not testable when both means are saturated


def _mjp(text: str, a: str, b: str | None, metric: str, source: str, key: str, direction: int, needs: str,
         **kw) -> Claim:
    return Claim("MJP", text, a, b, metric, source, key, direction, needs, **kw)


def _adpe(text: str, a: str, b: str, metric: str, source: str, key: str, needs: str, **kw) -> Claim:
    return Claim("AdPE", text, a, b, metric, source, key, +1, needs, **kw)


IG_SHUFFLED = dict(source="attacks", key="inverting_gradients_shuffled_psnr_mean", needs="attacks",
                   attack="inverting_gradients", optimisation=True)

CLAIMS: tuple[Claim, ...] = (
    _mjp("Position embeddings leak the input under gradient inversion", "deit_s", None,
         "PE-grad PSNR, original client (dB)", "attacks", "pe_gradient_plain_psnr_mean", +1, "attacks",
         attack="pe_gradient"),
    _mjp("Naive shuffling reduces gradient leakage", "naive_shuffle", "deit_s", "IG PSNR, shuffled client (dB)",
         direction=-1, **IG_SHUFFLED),
    _mjp("Naive shuffling costs accuracy", "naive_shuffle", "deit_s", "Top-1 (%)", "classify", "top1", -1,
         "supervised", accuracy=True),
    _mjp("MJP improves accuracy", "mjp", "deit_s", "Top-1 (%)", "classify", "top1", +1, "supervised",
         accuracy=True),
    _mjp("MJP improves robustness to corruptions", "mjp", "deit_s", "ImageNet-C mCE", "robustness", "mce", -1,
         "supervised"),
    _mjp("MJP improves natural adversarial accuracy", "mjp", "deit_s", "ImageNet-A top-1 (%)", "robustness",
         "a_top1", +1, "supervised", accuracy=True),
    _mjp("MJP improves out-of-distribution detection", "mjp", "deit_s", "ImageNet-O AUPR", "robustness",
         "o_aupr", +1, "supervised"),
    _mjp("MJP improves consistency under shuffled input", "mjp", "deit_s", "Agreement (%)", "shuffle",
         "consistency_agreement", +1, "supervised", factor=100.0),
    _mjp("MJP reduces leakage of the kept patches", "mjp", "deit_s", "PE-grad adaptive kept PSNR, shuffled (dB)",
         "attacks", "pe_gradient_adaptive_shuffled_psnr_kept_mean", -1, "attacks", attack="pe_gradient_adaptive"),
    _mjp("MJP reduces gradient leakage", "mjp", "deit_s", "IG PSNR, shuffled client (dB)", direction=-1,
         **IG_SHUFFLED),
    # attribution, not paper claims: MJP's mechanism without its N(0, 1) PE init, and that init alone
    # (docs/FIDELITY.md row 14)
    Claim("MJP ablation", "MJP without its PE init improves accuracy", "mjp_deit_init", "deit_s", "Top-1 (%)",
          "classify", "top1", +1, "supervised", accuracy=True),
    Claim("MJP ablation", "MJP without its PE init improves robustness to corruptions", "mjp_deit_init", "deit_s",
          "ImageNet-C mCE", "robustness", "mce", -1, "supervised"),
    Claim("MJP ablation", "MJP's N(0, 1) PE init alone improves accuracy", "deit_s_normal_init", "deit_s",
          "Top-1 (%)", "classify", "top1", +1, "supervised", accuracy=True),
    Claim("MJP ablation", "MJP's N(0, 1) PE init alone improves robustness to corruptions", "deit_s_normal_init",
          "deit_s", "ImageNet-C mCE", "robustness", "mce", -1, "supervised"),
    _adpe("AdPE improves fine-tuning over MAE+", "adpe_abs_coordinate", "mae_plus_abs", "Fine-tune top-1 (%)",
          "finetune", "top1", "pretrain", accuracy=True),
    _adpe("MAE+ improves fine-tuning over MAE", "mae_plus_abs", "mae", "Fine-tune top-1 (%)", "finetune", "top1",
          "pretrain", accuracy=True),
    _adpe("AdPE improves ADE20K segmentation over MAE", "adpe_abs_coordinate", "mae", "ADE20K mIoU (%)", "ade20k",
          "ade20k_miou", "transfer"),
    _adpe("AdPE improves COCO detection over MAE", "adpe_abs_coordinate", "mae", "COCO box AP (%)", "coco",
          "coco_ap_box", "transfer", factor=100.0),
)


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    verdict: str
    difference: PairedDifference | None  # None: nothing measured (a precondition failed first)
    note: str = ""


def attacked_models(params: dict) -> list[str]:
    """The models of the optimisation and standard-block closed-form attacks, as the workflow attacks them."""
    cfg = params.get("attacks", {})
    pretrain = params["experiments"].get("pretrain", [])
    return list(cfg.get("models", [])) + [e for e in cfg.get("finetuned", []) if e in pretrain]


def _models_available(params: dict, claim: Claim) -> bool:
    listed = attacked_models(params) if claim.needs == "attacks" else params["experiments"].get(claim.needs, [])
    return all(m in listed for m in (claim.a, claim.b) if m is not None)


def _attack_configured(params: dict, attack: str) -> bool:
    cfg = params.get("attacks", {})
    return attack in cfg.get("optimisation", []) + cfg.get("standard_closed_form", [])


def _attacks_ran(params: dict, metrics_dir: Path, seeds: list[int]) -> bool:
    """Whether any attacked model has an attacks.json (as the privacy tables, a workflow without the
    attack rules has none; one with them has every file, and a missing one is a DataError)."""
    return any((metrics_dir / seed_dir(seed) / exp / "attacks.json").is_file()
               for exp in attacked_models(params) for seed in seeds)


def _verdict(claim: Claim, diff: PairedDifference) -> str:
    low, high = (diff.mean, diff.mean) if diff.ci_low is None else (diff.ci_low, diff.ci_high)
    side = low > 0 if claim.direction > 0 else high < 0
    return SUPPORTED if side else NOT_SUPPORTED


def evaluate_claim(claim: Claim, params: dict, metrics_dir: Path, seeds: list[int]) -> ClaimResult:
    """One claim's verdict on results/metrics/<scale> (``metrics_dir``); a missing metrics file of a
    configured model is a DataError naming it."""
    if not _models_available(params, claim):
        return ClaimResult(claim, NOT_TESTABLE, None, "model not in experiments")
    if claim.attack is not None and not _attack_configured(params, claim.attack):
        return ClaimResult(claim, NOT_TESTABLE, None, f"{attack_name(claim.attack)} not in the attack lists")
    if claim.needs == "attacks" and not _attacks_ran(params, metrics_dir, seeds):
        return ClaimResult(claim, NOT_TESTABLE, None, "no attack metrics (the workflow ran no attacks)")
    success = float(params["attacks"]["metrics"]["success_psnr"])
    a = seed_values(metrics_dir, seeds, claim.a, claim.source, claim.key, claim.factor)
    b = (seed_values(metrics_dir, seeds, claim.b, claim.source, claim.key, claim.factor) if claim.b is not None
         else {seed: success for seed in seeds})
    _, a_values, b_values = pair_by_seed(a, b)
    if not a_values:
        return ClaimResult(claim, NOT_TESTABLE, None, f"no {claim.key} in {claim.source}.json")
    diff = paired_difference(a_values, b_values)
    mean_a, mean_b = summarize(dict(enumerate(a_values))).mean, summarize(dict(enumerate(b_values))).mean
    if claim.optimisation and mean_b < success:
        note = (f"{attack_name(claim.attack)} does not reconstruct {experiment_name(claim.b)} "
                f"(mean PSNR {mean_b:.1f} dB, under {success:g} dB)")
        return ClaimResult(claim, NOT_TESTABLE, diff, note)
    if claim.accuracy and min(mean_a, mean_b) >= SATURATED_TOP1:
        return ClaimResult(claim, NOT_TESTABLE, diff, f"accuracy saturated (both means at least {SATURATED_TOP1:g}%)")
    return ClaimResult(claim, _verdict(claim, diff), diff)


def evaluate_claims(params: dict, metrics_dir: Path, seeds: list[int]) -> list[ClaimResult]:
    return [evaluate_claim(claim, params, Path(metrics_dir), seeds) for claim in CLAIMS]


def comparison_name(claim: Claim, params: dict) -> str:
    """E.g. "MJP - DeiT-S", or "DeiT-S - 20 dB" for a level claim."""
    other = (experiment_name(claim.b) if claim.b is not None
             else f"{params['attacks']['metrics']['success_psnr']:g} dB")
    return f"{experiment_name(claim.a)} - {other}"


def difference_text(diff: PairedDifference | None, digits: int = 2) -> str:
    """E.g. "+1.25 [-0.50, +3.00]": the mean paired difference and its CI (the mean alone for one pair)."""
    if diff is None:
        return ""
    fmt = f"+.{digits}f"
    text = f"{diff.mean:{fmt}}"
    return text if diff.ci_low is None else f"{text} [{diff.ci_low:{fmt}}, {diff.ci_high:{fmt}}]"


def claims_frame(params: dict, metrics_dir: Path, seeds: list[int]) -> pd.DataFrame:
    """One row per claim: Paper, Claim, Comparison, Metric, Measured difference, Seeds, Verdict, Note."""
    records = []
    for result in evaluate_claims(params, metrics_dir, seeds):
        claim = result.claim
        records.append({
            "Paper": claim.paper, "Claim": claim.text, "Comparison": comparison_name(claim, params),
            "Metric": claim.metric, "Measured difference": difference_text(result.difference),
            "Seeds": "" if result.difference is None else str(result.difference.n),
            "Verdict": result.verdict, "Note": result.note,
        })
    return pd.DataFrame.from_records(records)
