"""Evaluation-time image transforms, defined once for every stage (timm's eval pipeline).

- ``center`` (the official test transform; MJP and MAE ``datasets.py``): Resize(floor(img / crop_pct))
  of the short side, then CenterCrop(img);
- ``squash`` (MJP's ``consistency.py``): Resize((img, img)) with no crop, the aspect ratio not kept;
- Hendrycks' ImageNet-C/-A/-O sets are already Resize + CenterCrop'ed: :func:`center_crop_transform`
  only crops.

``output`` picks what comes out: ``normalized`` (ToTensor + ImageNet mean/std, what the models take),
``tensor`` ([0, 1], for figures) or ``uint8`` (the resized pixels as a C x H x W uint8 tensor, for
generated datasets).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform

Output = Literal["normalized", "tensor", "uint8"]


def eval_transform(img_size: int, crop_pct: float, crop_mode: Literal["center", "squash"] = "center",
                   interpolation: str = "bicubic", output: Output = "normalized") -> Callable:
    """timm's eval transform: resize (``crop_mode``, module docstring), centre crop, then ``output``."""
    if output not in ("normalized", "tensor", "uint8"):
        raise ValueError(f"unknown transform output {output!r} (known: normalized, tensor, uint8)")
    # [0, 1] tensors: normalised by mean 0, std 1 (exact), as timm's un-normalised output is uint8
    mean, std = (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD) if output == "normalized" else ((0.0,) * 3, (1.0,) * 3)
    return create_transform(img_size, is_training=False, interpolation=interpolation, crop_pct=crop_pct,
                            crop_mode=crop_mode, mean=mean, std=std,
                            use_prefetcher=output == "uint8")  # timm's prefetcher input: the uint8 pixels


def squash_transform(img_size: int) -> Callable:
    """Official consistency.py: Resize((img, img)) bicubic, no crop (the aspect ratio is not kept)."""
    return eval_transform(img_size, 1.0, crop_mode="squash")


def center_crop_transform(img_size: int) -> Callable:
    """Hendrycks' ImageNet-C test transform: the sets are already Resize+CenterCrop'ed, so crop only."""
    from torchvision import transforms as T

    return T.Compose([T.CenterCrop(img_size), T.ToTensor(), T.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)])
