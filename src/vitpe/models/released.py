"""The officially released checkpoints' layouts and architectures, without torch: the workflow plans
with them (``experiments.imported``) and vitpe.models.importers reads the files."""
from __future__ import annotations

#: the released architectures: name -> (embed_dim, depth, num_heads), MLP ratio 4
ARCHS = {"deit-tiny": (192, 12, 3), "deit-small": (384, 12, 6), "deit-base": (768, 12, 12),
         "vit-base": (768, 12, 12), "vit-large": (1024, 24, 16), "vit-huge": (1280, 32, 16)}
DEIT = ("deit-tiny", "deit-small", "deit-base")
MAE = ("vit-base", "vit-large", "vit-huge")

#: layouts of classifiers (written as model.safetensors) and of pretrained encoders (encoder.safetensors)
CLASSIFIER_FORMATS = ("deit", "mjp", "mae-finetuned")
ENCODER_FORMATS = ("mae", "adpe-abs", "adpe-rel")
FORMAT_NAMES = ("deit", "mjp", "mae", "mae-finetuned", "adpe-abs", "adpe-rel")


def imported_experiments(params: dict, kind: str | None = None) -> dict[str, dict]:
    """``experiments.imported``: name -> {format, path[, arch][, rpe]}, the published checkpoints the
    workflow evaluates as it does trained ones; ``kind`` ("classifier" / "encoder") keeps that kind's formats."""
    formats = {"classifier": CLASSIFIER_FORMATS, "encoder": ENCODER_FORMATS}.get(kind or "", FORMAT_NAMES)
    entries = params["experiments"].get("imported") or {}
    return {name: entry for name, entry in entries.items() if entry["format"] in formats}
