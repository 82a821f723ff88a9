"""Architecture descriptions of the components, free of torch so the workflow can read them cheaply:
the ViT (:class:`ViTSpec`, a params.yaml ``model`` block) and the iRPE (:class:`RPEConfig`,
vitpe.models.irpe)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields


def grid_size_of(img_size: int, patch_size: int) -> int:
    if img_size % patch_size:
        raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
    return img_size // patch_size


@dataclass(frozen=True)
class ViTSpec:
    """The architecture of a params.yaml ``model`` block (also the weights metadata's ``model``)."""

    img_size: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float

    @classmethod
    def of(cls, model: "ViTSpec | Mapping") -> "ViTSpec":
        """``model`` itself, or the spec of a mapping holding (at least) every field."""
        if isinstance(model, ViTSpec):
            return model
        missing = [k for k in MODEL_KEYS if k not in model]
        if missing:
            raise ValueError(f"model config lacks {', '.join(missing)}")
        return cls(**{k: model[k] for k in MODEL_KEYS})

    @property
    def grid_size(self) -> int:
        return grid_size_of(self.img_size, self.patch_size)

    @property
    def num_patches(self) -> int:
        return self.grid_size ** 2


MODEL_KEYS = tuple(f.name for f in fields(ViTSpec))


LOOKUPS = ("discrete", "interp")
ADVERSARIES = (None, "embedding", "embedding_per_bucket", "coordinate")
INTERP_VARIANTS = ("faithful", "corrected")
# params / weights-metadata name of an RPE (``rpe: irpe | irpe_interp``) -> its lookup, and back
RPE_LOOKUPS = {"irpe": "discrete", "irpe_interp": "interp"}
RPE_KINDS = {lookup: kind for kind, lookup in RPE_LOOKUPS.items()}


@dataclass(frozen=True)
class RPEConfig:
    lookup: str = "discrete"
    adversary: str | None = None
    interp_variant: str = "faithful"
    # Pretraining scales q before both q·kᵀ and the RPE term; the official fine-tune attention uses
    # the unscaled q for the RPE term (√head_dim larger, docs/FIDELITY.md row 58): False reproduces that.
    scale_rpe_query: bool = True

    def __post_init__(self) -> None:
        if self.lookup not in LOOKUPS:
            raise ValueError(f"unknown RPE lookup {self.lookup!r} (known: {', '.join(LOOKUPS)})")
        if self.adversary not in ADVERSARIES:
            raise ValueError(f"unknown RPE adversary {self.adversary!r}")
        if self.interp_variant not in INTERP_VARIANTS:
            raise ValueError(f"unknown interp_variant {self.interp_variant!r} (known: {', '.join(INTERP_VARIANTS)})")
        if (self.adversary == "coordinate") != (self.lookup == "interp") and self.adversary is not None:
            raise ValueError("the RPE coordinate adversary needs the interpolated lookup, and the embedding "
                             "adversaries the discrete one")


@dataclass(frozen=True)
class RPEOptions:
    """The params ``rpe_options`` of a pretraining experiment, with the official code's defaults
    (docs/FIDELITY.md rows 57-58): its interpolation, and the unscaled-q RPE term at fine-tuning."""

    interp_variant: str = "faithful"
    finetune_scale_rpe_query: bool = False
