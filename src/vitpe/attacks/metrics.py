"""Privacy metrics per reconstructed image, aggregates and paired comparisons (docs/FIDELITY.md row 48).

Every image metric is computed on [0, 1] images (de-normalised, clamped), one value per image:

- MSE: mean over C·H·W of (x̂ - x)².
- PSNR: torchmetrics, data_range 1: 10·log10(1 / MSE); capped at ``PSNR_CAP`` dB so a perfect
  reconstruction (MSE 0, PSNR inf) still aggregates (docs/FIDELITY.md row 48).
- SSIM: torchmetrics, Gaussian 11×11, σ 1.5, K1 0.01, K2 0.03, data_range 1. torchmetrics
  reflect-pads and crops the border of the SSIM map back off; MJP's pytorch-ssim zero-pads.
- FFT2D: 1 - |⟨F(a), F(b)⟩| / (‖F(a)‖·‖F(b)‖), F the per-channel 2-D FFT flattened over C·H·W and
  ⟨u, v⟩ = Σ conj(u)·v the Hermitian inner product. MJP's script used SciPy's non-conjugated form,
  which current SciPy rejects for complex input; the values are not interchangeable.
- LPIPS (AlexNet, torchmetrics' LPIPS with its bundled linear layers): only when torchvision's
  ImageNet AlexNet weights are at the configured path; otherwise skipped with a recorded reason.
- Patch level (MJP targets position information): per-patch PSNR averaged over kept and over
  shuffled positions (against the image the client fed); patch-position recovery: a Hungarian
  assignment of reconstructed to ground-truth patches on patch MSE, the fraction assigned to their
  own grid index, the mean grid displacement, and the PSNR after that re-ordering.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import wilcoxon

from vitpe.errors import CheckpointError
from vitpe.models.patches import patchify

PSNR_CAP = 200.0  # dB; float64 round-off of an exact reconstruction lands far above 100 dB
IMAGE_METRICS = ("mse", "psnr", "ssim", "fft2d")
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's AlexNet_Weights.IMAGENET1K_V1


def mse(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((recon.double() - target.double()) ** 2).flatten(1).mean(dim=1)


def psnr(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from torchmetrics.functional.image import peak_signal_noise_ratio

    value = peak_signal_noise_ratio(recon.double(), target.double(), data_range=1.0, reduction="none",
                                    dim=(1, 2, 3))
    return torch.nan_to_num(value, posinf=PSNR_CAP).clamp(max=PSNR_CAP)


def ssim(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(recon.double(), target.double(), gaussian_kernel=True, sigma=1.5,
                                               kernel_size=11, data_range=1.0, k1=0.01, k2=0.03,
                                               reduction="none")


def fft2d_distance(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Hermitian cosine distance between the 2-D spectra (module docstring), per image."""
    fa = torch.fft.fft2(recon.double()).flatten(1)
    fb = torch.fft.fft2(target.double()).flatten(1)
    dot = (fa.conj() * fb).sum(dim=1).abs()
    return 1 - dot / (fa.abs().pow(2).sum(dim=1).sqrt() * fb.abs().pow(2).sum(dim=1).sqrt())


def patch_psnr(recon: torch.Tensor, target: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, N] PSNR of every patch (capped like ``psnr``)."""
    err = ((patchify(recon.double(), patch) - patchify(target.double(), patch)) ** 2).mean(dim=-1)
    return (-10 * torch.log10(err.clamp(min=10 ** (-PSNR_CAP / 10)))).clamp(max=PSNR_CAP)


def split_patch_psnr(recon: torch.Tensor, target: torch.Tensor, patch: int,
                     shuffled: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean per-patch PSNR over kept and over shuffled positions ([B] each; NaN for an empty group)."""
    values = patch_psnr(recon, target, patch)
    mask = torch.zeros(values.shape[1], dtype=torch.bool) if shuffled is None else shuffled.cpu().bool()
    nan = torch.full((values.shape[0],), float("nan"), dtype=values.dtype)
    kept = values[:, ~mask].mean(dim=1) if (~mask).any() else nan
    moved = values[:, mask].mean(dim=1) if mask.any() else nan
    return kept, moved


def position_recovery(recon: torch.Tensor, target: torch.Tensor, patch: int) -> dict[str, list[float]]:
    """Per image: Hungarian assignment of reconstructed to true patches on MSE; accuracy (share of
    patches assigned to their own grid index), mean displacement (grid units) and the PSNR of the
    re-ordered reconstruction."""
    rp, tp = patchify(recon.double(), patch), patchify(target.double(), patch)
    grid = int(round(rp.shape[1] ** 0.5))
    out: dict[str, list[float]] = {"pos_acc": [], "pos_disp": [], "perm_psnr": []}
    for r, t in zip(rp, tp):
        cost = torch.cdist(r, t).pow(2) / r.shape[1]  # [N recon, N true] patch MSE
        rows, cols = linear_sum_assignment(cost.numpy())
        out["pos_acc"].append(float(np.mean(cols == rows)))
        dr, dc = cols // grid - rows // grid, cols % grid - rows % grid
        out["pos_disp"].append(float(np.mean(np.hypot(dr, dc))))
        err = float(cost[rows, cols].mean())
        out["perm_psnr"].append(min(PSNR_CAP, -10 * math.log10(err)) if err > 0 else PSNR_CAP)
    return out


def match_order(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """For batches > 1: the order of ``recon`` that best matches ``target`` (Hungarian on pixel MSE)."""
    cost = torch.cdist(recon.flatten(1).double(), target.flatten(1).double()).pow(2)
    rows, cols = linear_sum_assignment(cost.numpy())
    order = torch.empty(len(cols), dtype=torch.long)
    order[torch.as_tensor(cols)] = torch.as_tensor(rows)
    return recon[order]


# --- LPIPS ------------------------------------------------------------------------------------------

class Lpips:
    """torchmetrics' AlexNet LPIPS with the backbone read from a local torchvision weights file.

    torchmetrics (like the lpips package) would download the ImageNet AlexNet; here the network is
    built without weights (``pnet_rand``) and the file at the configured path is loaded into it.
    ``status`` is "used" or "skipped"; ``reason`` says why it was skipped.
    """

    def __init__(self, path: str | None) -> None:
        self.net = None
        if path is None:
            self.status, self.reason = "skipped", "no AlexNet weights configured (attacks.metrics.lpips_alexnet: null)"
            return
        if not Path(path).is_file():
            self.status, self.reason = "skipped", f"AlexNet weights {path} not found"
            return
        from torchmetrics.functional.image.lpips import _LPIPS

        from vitpe.models.weights import load_weights_only

        net = _LPIPS(pretrained=True, net="alex", pnet_rand=True)
        state = load_weights_only(path, "AlexNet state dict (attacks.metrics.lpips_alexnet)")
        expected = "expected torchvision's AlexNet state dict (attacks.metrics.lpips_alexnet)"
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: holds a {type(state).__name__}; {expected}")
        features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        mapped = {}
        for key in net.net.state_dict():  # slice<k>.<index in alexnet.features>.<weight|bias>
            index_and_param = key.split(".", 1)[1]
            if index_and_param not in features:
                raise CheckpointError(f"{path}: no key features.{index_and_param}; {expected}")
            mapped[key] = features[index_and_param]
        try:
            net.net.load_state_dict(mapped)
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: {str(exc).splitlines()[-1].strip()}; {expected}") from None
        self.net = net.eval()
        self.status, self.reason = "used", ""

    @torch.no_grad()
    def __call__(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.net is None:
            return torch.full((recon.shape[0],), float("nan"))
        # [0, 1] -> [-1, 1], as lpips' normalize=True
        return self.net(recon.float() * 2 - 1, target.float() * 2 - 1).reshape(-1).double()


# --- per-image rows, aggregates, paired differences ------------------------------------------------

def image_rows(recon: torch.Tensor, original: torch.Tensor, fed: torch.Tensor, patch: int,
               shuffled: torch.Tensor | None, lpips: Lpips | None = None) -> list[dict[str, float]]:
    """One dict per image: metrics against the original image, ``*_fed`` against what the client fed,
    per-patch PSNR split kept/shuffled (against the fed image), position recovery (against the
    original)."""
    cols: dict[str, torch.Tensor | list[float]] = {
        "mse": mse(recon, original), "psnr": psnr(recon, original), "ssim": ssim(recon, original),
        "fft2d": fft2d_distance(recon, original),
        "psnr_fed": psnr(recon, fed), "ssim_fed": ssim(recon, fed),
    }
    if lpips is not None and lpips.net is not None:
        cols["lpips"] = lpips(recon, original)
    cols["psnr_kept"], cols["psnr_shuffled"] = split_patch_psnr(recon, fed, patch, shuffled)
    cols.update(position_recovery(recon, original, patch))
    n = recon.shape[0]
    return [{k: float(v[i]) for k, v in cols.items()} for i in range(n)]


def summarise(values: Iterable[float]) -> dict[str, float]:
    """mean, median, std (ddof 1), IQR bounds of the finite values; {} when there are none."""
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if arr.size == 0:
        return {}
    return {"mean": float(arr.mean()), "median": float(np.median(arr)),
            "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
            "q25": float(np.quantile(arr, 0.25)), "q75": float(np.quantile(arr, 0.75))}


def aggregate(table: pd.DataFrame, metrics: Iterable[str], success_psnr: float | None = None) -> dict[str, float]:
    """Flat ``<attack>_<mode>_<metric>_<stat>`` keys over the per-image table."""
    out: dict[str, float] = {}
    for (attack, mode), group in table.groupby(["attack", "mode"], sort=True):
        prefix = f"{attack}_{mode}"
        out[f"{prefix}_images"] = int(len(group))
        for metric in metrics:
            if metric in group:
                for stat, value in summarise(group[metric]).items():
                    out[f"{prefix}_{metric}_{stat}"] = value
        if success_psnr is not None:
            out[f"{prefix}_success_rate"] = float((group["psnr"] > success_psnr).mean())
    return out


def paired_difference(a: np.ndarray, b: np.ndarray, seed: int = 0, n_boot: int = 2000) -> dict[str, float]:
    """a - b on the same images: mean, median, std, percentile-bootstrap 95 % CI of the mean,
    Wilcoxon signed-rank p (two-sided; 1.0 when every difference is 0), n."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    diff = diff[np.isfinite(diff)]
    if diff.size == 0:
        return {"n": 0}
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(n_boot, diff.size))].mean(axis=1)
    out = {"n": int(diff.size), "mean": float(diff.mean()), "median": float(np.median(diff)),
           "std": float(diff.std(ddof=1)) if diff.size > 1 else 0.0,
           "ci_low": float(np.quantile(means, 0.025)), "ci_high": float(np.quantile(means, 0.975))}
    if np.all(diff == 0):
        out["wilcoxon_p"] = 1.0
    else:
        out["wilcoxon_p"] = float(wilcoxon(diff).pvalue)
    return out


def paired_comparison(tables: Mapping[str, pd.DataFrame], pairs: Iterable[tuple[str, str]],
                      metrics: Iterable[str] = ("psnr",), seed: int = 0, n_boot: int = 2000) -> dict[str, float]:
    """Flat ``<a>_vs_<b>_<attack>_<mode>_<metric>_diff_<stat>`` over the images both models share."""
    out: dict[str, float] = {}
    for a, b in pairs:
        if a not in tables or b not in tables:
            continue
        joined = tables[a].merge(tables[b], on=["attack", "mode", "image"], suffixes=("_a", "_b"))
        for (attack, mode), group in joined.groupby(["attack", "mode"], sort=True):
            for metric in metrics:
                if f"{metric}_a" not in group or f"{metric}_b" not in group:
                    continue
                stats = paired_difference(group[f"{metric}_a"].to_numpy(), group[f"{metric}_b"].to_numpy(),
                                          seed, n_boot)
                for stat, value in stats.items():
                    out[f"{a}_vs_{b}_{attack}_{mode}_{metric}_diff_{stat}"] = value
    return out
