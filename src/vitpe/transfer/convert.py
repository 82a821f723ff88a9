"""Encoder checkpoints -> transfer backbones, with every key accounted for.

The upstream backbones (mmseg ``MAE``, mmdet's ViTDet ``ViT``) load with ``strict=False``: an
unconverted timm state dict loads 1 of 196 tensors there and nothing complains (docs/FIDELITY.md
row 24). Here every checkpoint key is either loaded into the backbone or listed by the backbone as
unused by design (e.g. the pretraining's final ``norm``, which MAE/BEiT segmentation and ViTDet do
not apply), and every backbone tensor is either loaded or listed as new (trained from scratch, e.g.
ViTDet's relative-position tables). Anything else raises CheckpointError naming the keys, and the
counts are returned so tests and logs can assert them.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vitpe.errors import CheckpointError
from vitpe.models.spec import MODEL_KEYS
from vitpe.models.weights import key_problems

TASKS = {"ade20k": "ADE20K (UperNet)", "coco": "COCO (Mask R-CNN, ViTDet)"}


@dataclass(frozen=True)
class Encoder:
    """A pretraining encoder: timm-keyed tensors plus the metadata written with them."""

    path: Path
    state: dict[str, torch.Tensor]
    metadata: dict[str, Any]

    @property
    def model(self) -> dict[str, Any]:
        return dict(self.metadata["model"])

    @property
    def grid(self) -> int:
        return self.model["img_size"] // self.model["patch_size"]

    @property
    def rpe(self) -> str | None:
        return self.metadata.get("rpe")


@dataclass(frozen=True)
class LoadReport:
    """What a load did: tensors loaded, checkpoint keys unused by design, backbone keys trained anew."""

    loaded: tuple[str, ...]
    unused: tuple[str, ...]
    new: tuple[str, ...]

    def summary(self, source: str) -> str:
        return (f"{source}: loaded {len(self.loaded)} tensors; unused by this backbone: "
                f"{', '.join(self.unused) or 'none'}; new: {len(self.new)}")


def read_encoder(path: str | Path) -> Encoder:
    """Read ``encoder.safetensors`` (vitpe.train.checkpoint format) and check its metadata."""
    from vitpe.models.weights import read_metadata, read_weights

    path = Path(path)
    state = read_weights(path)
    metadata = read_metadata(path)
    model = metadata.get("model")
    if not isinstance(model, dict) or any(k not in model for k in MODEL_KEYS):
        raise CheckpointError(f"{path}: metadata lacks the encoder architecture (model.{{{', '.join(MODEL_KEYS)}}})")
    if "pos_embed" not in state:
        raise CheckpointError(f"{path}: no pos_embed tensor; transfer needs an absolute-PE encoder")
    return Encoder(path, state, metadata)


def check_transferable(encoder: Encoder, task: str, rpe_supported: bool = False) -> None:
    """Refuse encoders whose PE the task backbone cannot carry (clear message, no silent drop)."""
    if encoder.rpe and not rpe_supported:
        # ViTDet's windowed attention has no counterpart of the iRPE tables (blocks.<i>.attn.rpe_k.*),
        # and dropping them would transfer a different model than the one pretrained (docs/FIDELITY.md
        # row 34).
        raise CheckpointError(
            f"{encoder.path}: RPE encoders (rpe={encoder.rpe!r}) cannot transfer to {TASKS.get(task, task)}: "
            "its windowed/global ViTDet attention has no iRPE term, and dropping the RPE tables would "
            "silently change the model (docs/FIDELITY.md row 34); use an absolute-PE encoder")
    if encoder.metadata.get("pos_embed", "sincos") not in ("sincos", "learnable"):
        raise CheckpointError(f"{encoder.path}: pos_embed {encoder.metadata['pos_embed']!r} cannot transfer "
                              "(expected sincos or learnable)")


def match_state(state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], *,
                unused: Iterable[str] = (), new: Iterable[str] = (), source: str = "checkpoint") -> LoadReport:
    """Check ``state`` (checkpoint keys) against ``expected`` (backbone keys -> shapes).

    ``unused``: checkpoint keys the backbone does not consume by design; ``new``: backbone keys no
    checkpoint provides by design. Any other missing/unexpected key or any shape difference raises
    CheckpointError naming them all.
    """
    unused = set(unused)
    problems = key_problems(state, expected, unused=unused, new=new, target="backbone")
    if problems:
        raise CheckpointError(f"{source} does not fit this backbone; " + "; ".join(problems))
    loaded = tuple(sorted(set(state) & set(expected)))
    return LoadReport(loaded=loaded, unused=tuple(sorted(set(state) & unused)), new=tuple(sorted(set(expected) - set(state))))
