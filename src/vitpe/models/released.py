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
