"""Input pipelines (timm transforms, Mixup/CutMix) and a sampler that can resume mid-epoch.

Train: RandomResizedCrop (bicubic) -> flip -> RandAugment -> ToTensor/Normalize -> RandomErasing,
then Mixup/CutMix with label smoothing on the device (official MJP code, data/build.py).
Eval: Resize(floor(img / test_crop_ratio), bicubic) -> CenterCrop(img) -> Normalize.
A sample that cannot be decoded or transformed fails with one line naming the file and the step.
"""
from __future__ import annotations

import random
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from timm.data import Mixup, create_transform
from timm.data.auto_augment import posterize as timm_posterize
from timm.data.distributed_sampler import RepeatAugSampler
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, default_collate
from torchvision import transforms as T
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import default_loader

from vitpe.data.transforms import eval_transform
from vitpe.errors import DataError
from vitpe.runs import ClassifierRecipe


def train_transform(recipe: ClassifierRecipe, img_size: int) -> Callable:
    # timm (0.4.12 as in the official code, and 1.x alike) drops colour jitter once a RandAugment
    # policy is set; passing the configured value through keeps that behaviour (fidelity table).
    jitter = recipe.color_jitter or None
    transform = create_transform(
        img_size,
        is_training=True,
        scale=tuple(recipe.crop_scale),
        hflip=recipe.hflip,
        color_jitter=jitter,
        auto_augment=recipe.randaugment or None,
        interpolation="bicubic",
        re_prob=recipe.reprob,
        re_mode="pixel",
        re_count=1,
    )
    return with_faithful_posterize(transform)


# timm's AugmentOp names whose level is the number of bits ImageOps.posterize keeps
POSTERIZE_OPS = ("Posterize", "PosterizeIncreasing", "PosterizeOriginal")


def posterize_keeping(img: Image.Image, bits_to_keep: int, **kwargs: Any) -> Image.Image:
    """timm's posterize op as the official environment ran it (docs/FIDELITY.md row 67).

    With ``mstd`` > 0 RandAugment samples magnitudes up to its clip at 10, which PosterizeIncreasing
    maps to 0 bits kept (Posterize: magnitudes under 2.5). The Pillow of the official code's time
    computed the mask ``~(2 ** (8 - bits) - 1)`` for any ``bits``, zeroing every channel at 0;
    Pillow 13 raises ValueError instead. Kept bits 1..8 go to timm's op unchanged.
    """
    if bits_to_keep <= 0:
        return img.point([0] * 256 * len(img.getbands()))
    return timm_posterize(img, bits_to_keep, **kwargs)


def with_faithful_posterize(transform: Callable) -> Callable:
    """Swap ``posterize_keeping`` into the posterize ops of every RandAugment/AutoAugment step."""
    for step in getattr(transform, "transforms", [transform]):
        ops = list(getattr(step, "ops", []))  # RandAugment, AugMix
        for sub_policy in getattr(step, "policy", []):  # AutoAugment: a list of sub-policies
            ops.extend(sub_policy)
        for op in ops:
            if op.name in POSTERIZE_OPS:
                op.aug_fn = posterize_keeping
    return transform


class SampleError(DataError):
    """One sample could not be loaded or transformed: ``<file>: <step> failed: <error>``.

    Raised in a DataLoader worker, it reaches the main process re-created by torch's ExceptionWrapper
    from the worker's whole traceback text; the constructor keeps only the original one-line message.
    """

    def __init__(self, message: str) -> None:
        if "Original Traceback" in message:
            message = message.rstrip().splitlines()[-1].split(": ", 1)[-1]
        super().__init__(message)


def _one_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class CheckedImageFolder(ImageFolder):
    """torchvision's ImageFolder whose samples fail with a SampleError naming the file and the step.

    The transform's steps run one by one exactly as ``Compose`` runs them (same random draws).
    ``memo`` (see ``image_folder``) keeps each transformed sample of a transform that draws nothing.
    """

    memo: dict[int, tuple[Any, Any]] | None = None

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        if self.memo is not None and index in self.memo:
            return self.memo[index]
        path, target = self.samples[index]
        try:
            sample = self.loader(path)
        except Exception as exc:  # PIL: OSError, UnidentifiedImageError, SyntaxError, ValueError, ...
            raise SampleError(f"{path}: decode failed: {_one_line(exc)}") from None
        if self.transform is not None:
            for step in getattr(self.transform, "transforms", [self.transform]):
                try:
                    sample = step(sample)
                except Exception as exc:
                    raise SampleError(f"{path}: {type(step).__name__} failed: {_one_line(exc)}") from None
        if self.target_transform is not None:
            target = self.target_transform(target)
        if self.memo is not None:
            self.memo[index] = (sample, target)
        return sample, target


# Runtime.cache_images: what a process has decoded (by file) and, for the evaluation transforms, which
# draw nothing at random, the finished samples (by folder and transform). Transforms return new images
# and collation new batches, so nothing cached is ever changed.
_DECODED: dict[str, Image.Image] = {}
_SAMPLES: dict[tuple[str, str], dict[int, tuple[Any, Any]]] = {}


def decode_once(path: str) -> Image.Image:
    """torchvision's loader, remembered for the life of the process."""
    if path not in _DECODED:
        _DECODED[path] = default_loader(path)
    return _DECODED[path]


def image_folder(root: Path, transform: Callable | None, num_classes: int | None = None,
                 cache: Literal["decoded", "samples"] | None = None) -> ImageFolder:
    """An ImageFolder (with exactly ``num_classes`` classes, if given), or a DataError saying what is wrong.

    ``cache`` (``Runtime.cache_images``, for small sets): "decoded" keeps each decoded image for the
    life of the process; "samples", for a transform that draws nothing at random, each transformed
    sample, shared by every folder of the same root and transform (``repr``) the process builds."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found (generate or link the dataset first)")
    try:
        dataset = CheckedImageFolder(str(root), transform=transform,
                                     loader=decode_once if cache == "decoded" else default_loader)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"{root}: not a usable ImageFolder ({exc})") from None
    if num_classes is not None and len(dataset.classes) != num_classes:
        raise DataError(f"{root}: {len(dataset.classes)} class folders, but the model has {num_classes} classes")
    if cache == "samples":
        dataset.memo = _SAMPLES.setdefault((str(root.resolve()), repr(transform)), {})
    return dataset


class NormalizeBatch:
    """Collate uint8 images and apply a transform's closing ToTensor + Normalize to the whole batch.

    The same float32 operations on the same values as per image (``x / 255``, then ``(x - mean) / std``
    over the channel axis), so the batch is bit for bit the one the per-image steps give, at a
    fraction of their Python overhead; see :func:`split_normalize`.
    """

    def __init__(self, mean: Any, std: Any) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, samples: list[tuple[Any, ...]]) -> list[Any]:
        images, *rest = default_collate(samples)
        return [images.to(torch.float32).div(255).sub_(self.mean).div_(self.std), *rest]


def split_normalize(transform: Callable) -> tuple[Callable, NormalizeBatch | None]:
    """``(per-image transform, collate)`` with a closing ToTensor + Normalize moved onto the batch.

    The per-image part then ends in PILToTensor (uint8, no rescaling). A pipeline with a step after
    them (RandomErasing, which works on normalised values per image), or without them, is returned
    unchanged with ``None`` (the default collate).
    """
    steps = list(getattr(transform, "transforms", []))
    if len(steps) < 2 or not isinstance(steps[-2], T.ToTensor) or not isinstance(steps[-1], T.Normalize):
        return transform, None
    return T.Compose([*steps[:-2], T.PILToTensor()]), NormalizeBatch(steps[-1].mean, steps[-1].std)


def mix_seed(*values: int) -> int:
    """One 32-bit seed from several integers (e.g. run seed and epoch) without collisions like a+b."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1)[0])


class ResumableSampler(Sampler[int]):
    """Wraps timm's RepeatAugSampler or torch's DistributedSampler for exact resumption.

    Each epoch's order depends only on (run seed, epoch): timm's sampler seeds itself with the epoch
    alone, so the run seed is folded into the value given to ``set_epoch``. ``set_position`` skips the
    samples already consumed in the current epoch, so a resumed run sees the same remaining batches.
    With ``sample_seeds`` it yields (index, seed of that sample) pairs for :class:`SeededSamples`.
    """

    def __init__(self, base: RepeatAugSampler | DistributedSampler, seed: int) -> None:
        self.base = base
        self.seed = seed
        self.epoch = 0
        self.skip = 0
        self.sample_seeds = False

    def set_position(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[int] | Iterator[tuple[int, int]]:
        self.base.set_epoch(mix_seed(self.seed, self.epoch))
        indices = list(self.base)[self.skip:]
        if not self.sample_seeds:
            return iter(indices)
        # the sample's place in this rank's epoch, not in the (possibly resumed) iteration
        return ((index, mix_seed(self.seed, self.epoch, self.base.rank, self.skip + i))
                for i, index in enumerate(indices))

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)

    @property
    def samples_per_epoch(self) -> int:
        return len(self.base)


def build_train_sampler(dataset: ImageFolder, recipe: ClassifierRecipe, seed: int, rank: int,
                        world_size: int) -> ResumableSampler:
    if recipe.repeated_aug > 1:
        base = RepeatAugSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True,
                                num_repeats=recipe.repeated_aug)
    else:
        base = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=0)
    return ResumableSampler(base, seed)


def _worker_init(worker_id: int) -> None:
    # SLURM may signal every process of the job; only the main process checkpoints, so workers
    # ignore pre-emption signals and are shut down by the main process instead of dying mid-batch.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def close_batches(batches: Iterator | None) -> None:
    """Stop a DataLoader iterator's worker processes now.

    Dropping the last reference is not enough while an exception propagates: its traceback keeps the
    iterator alive, and the workers, which ignore SIGTERM (``_worker_init``), then block
    multiprocessing's exit handler (terminate, then join) forever.
    """
    shutdown = getattr(batches, "_shutdown_workers", None)  # only multi-process iterators have workers
    if shutdown is not None:
        shutdown()


class SeededSamples(Dataset):
    """``dataset`` read by (index, seed) pairs, each sample drawn with Python's, NumPy's and torch's RNGs
    seeded from its own seed: a sample's augmentation depends on (run seed, epoch, rank, place in the
    epoch) alone, not on which worker draws it or what that worker drew before. So loader workers can
    persist across epochs and a resumed run draws the same augmentations as an uninterrupted one, with
    any number of workers. Used in worker processes only: it reseeds the RNGs of the process it runs in."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        return self.dataset[index]


class TrainData:
    """The training set, its sampler and its DataLoader, positioned at (epoch, batch).

    Without workers the transforms draw from the main process's RNG streams, which the training state
    saves and restores. With workers the loader is built once and its workers persist across epochs;
    each sample is then seeded on its own (:class:`SeededSamples`).
    """

    def __init__(self, dataset: ImageFolder, sampler: ResumableSampler, batch_size: int, num_workers: int,
                 seed: int, pin_memory: bool, collate: Callable | None = None) -> None:
        self.dataset = dataset
        self.collate = collate  # None: torch's default_collate
        self.sampler = sampler
        self.batch_size = batch_size  # per process, per micro-batch
        self.num_workers = num_workers
        self.seed = seed
        self.pin_memory = pin_memory
        self.sampler.sample_seeds = num_workers > 0
        self._loader: DataLoader | None = None

    @property
    def batches_per_epoch(self) -> int:
        return self.sampler.samples_per_epoch // self.batch_size

    def loader(self, epoch: int, skip_batches: int = 0) -> DataLoader:
        """The loader of the rest of ``epoch`` from batch ``skip_batches`` (its sampler set there)."""
        self.sampler.set_position(epoch, skip_batches * self.batch_size)
        if self._loader is None or not self.num_workers:
            # An explicit generator keeps DataLoader from drawing its worker base seed from the global
            # torch RNG, which would make the global stream depend on where an epoch was (re)started.
            self._loader = DataLoader(
                SeededSamples(self.dataset) if self.num_workers else self.dataset,
                batch_size=self.batch_size,
                sampler=self.sampler,
                collate_fn=self.collate,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
                drop_last=True,
                generator=torch.Generator().manual_seed(mix_seed(self.seed, epoch, skip_batches)),
                worker_init_fn=_worker_init if self.num_workers else None,
                persistent_workers=self.num_workers > 0,
            )
        return self._loader

    def close(self) -> None:
        """Stop the persistent workers now (see :func:`close_batches`)."""
        if self._loader is not None:
            close_batches(self._loader._iterator)
            self._loader = None


def build_train_data(root: Path, recipe: ClassifierRecipe, img_size: int, num_classes: int, batch_size: int,
                     seed: int, rank: int, world_size: int, num_workers: int = 0,
                     pin_memory: bool = False, cache_images: bool = False) -> TrainData:
    transform, collate = split_normalize(train_transform(recipe, img_size))
    dataset = image_folder(root, transform, num_classes, "decoded" if cache_images else None)
    sampler = build_train_sampler(dataset, recipe, seed, rank, world_size)
    return TrainData(dataset, sampler, batch_size, num_workers, seed, pin_memory, collate)


def build_eval_loader(root: Path, recipe: ClassifierRecipe, img_size: int, num_classes: int, batch_size: int,
                      num_workers: int = 0, pin_memory: bool = False, cache_images: bool = False) -> DataLoader:
    dataset = image_folder(root, eval_transform(img_size, recipe.test_crop_ratio), num_classes,
                           "samples" if cache_images else None)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=pin_memory, drop_last=False)


def build_mixup(recipe: ClassifierRecipe, num_classes: int) -> Mixup | None:
    """timm's batch-mode Mixup/CutMix with label smoothing, or None when both alphas are 0."""
    if recipe.mixup <= 0 and recipe.cutmix <= 0:
        return None
    return Mixup(
        mixup_alpha=recipe.mixup,
        cutmix_alpha=recipe.cutmix,
        prob=recipe.mixup_prob,
        switch_prob=recipe.mixup_switch_prob,
        mode="batch",
        label_smoothing=recipe.smoothing,
        num_classes=num_classes,
    )


def build_criterion(recipe: ClassifierRecipe, mixup: Mixup | None) -> nn.Module:
    """Soft-target CE with Mixup (targets already smoothed), else label-smoothing CE, else CE."""
    if mixup is not None:
        return SoftTargetCrossEntropy()
    if recipe.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=recipe.smoothing)
    return nn.CrossEntropyLoss()
