"""Where the active scale's datasets are, and how many classes they train (from the resolved params)."""
from __future__ import annotations

from pathlib import Path

# Generated sets (tiny: embedded, smoke: mini) put each dataset in a folder of this name under their root.
GENERATED_FOLDERS = {"imagenet": "imagenet", "imagenet_c": "imagenet-c", "imagenet_a": "imagenet-a",
                     "imagenet_o": "imagenet-o", "ade20k": "ade20k", "coco": "coco"}


def dataset_paths(params: dict) -> dict[str, Path]:
    """Roots of every dataset for the active scale (the generated sets mirror the real layouts).

    ``embedded`` (tiny) adds its own attack photographs; ``mini`` (smoke) attacks ImageNet validation
    images, as the paper scale does.
    """
    kind = params["scales"][params["scale"]]["data"]
    if kind == "real":
        real = params["data"]["real"]
        return {k: Path(real[k]) for k in GENERATED_FOLDERS}
    root = Path(params["data"][kind]["root"])
    paths = {key: root / folder for key, folder in GENERATED_FOLDERS.items()}
    if kind == "embedded":
        paths["attack"] = root / "attack"
    return paths


def num_classes(params: dict) -> int:
    return params["data"][params["scales"][params["scale"]]["data"]]["num_classes"]
