"""ImageNet-C corruption names and the class-index masks of ImageNet-A/-O-style subsets.

ImageNet-A and -O cover 200 of the 1000 training classes; a model trained on all of them is scored on
``logits[:, mask]`` where ``mask`` lists the subset's classes as indices into the training classes.
ImageFolder sorts class folders by name, so the mask is sorted too and ``mask[target]`` is the training
index of a subset target.
"""
from __future__ import annotations

from pathlib import Path

from vitpe.errors import DataError

# The 15 corruptions of the ImageNet-C benchmark (mCE is averaged over these) ...
BENCHMARK_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
# ... and the 4 held-out ("extra") ones, reported separately.
EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS: tuple[str, ...] = BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)


def class_folders(root: Path) -> list[str]:
    """Class folder names of an ImageFolder root, in ImageFolder's (sorted) order."""
    if not Path(root).is_dir():
        raise DataError(f"{root}: missing folder (expected an ImageFolder: <class>/<image>)")
    return sorted(entry.name for entry in Path(root).iterdir() if entry.is_dir())


def class_index_mask(train_classes: list[str] | Path, subset_root: Path) -> list[int]:
    """Indices of ``subset_root``'s class folders within the training classes, sorted.

    ``train_classes`` is the training set's class list (ImageFolder.classes) or its folder.
    """
    if isinstance(train_classes, (str, Path)):
        train_classes = class_folders(Path(train_classes))
    index = {name: i for i, name in enumerate(train_classes)}
    mask = []
    for name in class_folders(subset_root):
        if name not in index:
            raise DataError(f"{Path(subset_root) / name}: class folder is not a training class "
                            f"(expected one of the {len(index)} training class folders)")
        mask.append(index[name])
    return sorted(mask)
