"""The embedded datasets: every set the study reads, small, in its real on-disk layout, from one seed.

``synthesize(params, root)`` writes under ``root``::

    imagenet/{train,val}/c00_alfa/*.png          ImageFolder; a class is a spatial LAYOUT of the same parts
    imagenet-c/<corruption>/<severity>/<class>/*.JPEG   ImageNet-C protocol on the first val images
    imagenet-a/<class>/*.jpg                     harder renderings of a subset of the training classes
    imagenet-o/<class>/*.jpg                     training-class folder names, held-out layouts (OOD)
    ade20k/{images,annotations}/{training,validation}/   ADE20K-150 label ids, 0 = "other"
    coco/{train2017,val2017}/*.jpg, coco/annotations/instances_*.json   COCO instances (polygons + crowd RLE)
    attack/<class>/<photo>.png                   scikit-image photographs for gradient-inversion attacks
    layouts.json                                 the class layouts (which part sits in which grid cell)
    manifest.json                                written last: the completion marker, with file hashes

Why layouts: the papers are about position embeddings. Every class shows the same three parts (a disk,
a square, a triangle, each with its own texture and colour) and classes differ only in WHERE the parts
sit on a coarse grid. A ViT must use positions to classify them, and shuffling patches leaves every
class the same bag of patches (chance accuracy), like the MJP paper's shuffled-input experiments. No
layout is the horizontal mirror of another (or of itself), so flip augmentation keeps labels right.
Backgrounds and fills are crops of scikit-image's bundled photographs and textures, so the images
have natural statistics (ImageNet-C's corruptions and RandAugment behave as on photos).

Every image has its own random stream ``_rng(seed, set, index)``: output is byte-identical for a seed.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import inspect
import itertools
import json
import multiprocessing
import os
import shutil
import warnings
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vitpe.data.subsets import ALL_CORRUPTIONS, SEVERITIES
from vitpe.errors import ConfigError, DataError

Log = Callable[[str], None]
Layout = dict[str, tuple[int, int]]
Size = int | tuple[int, int]  # a square's side, or (height, width)

GRID = 4  # parts sit in cells of a GRID x GRID grid (8 px cells at 32 px: 2 x 2 ViT patches of 4 px)
PART_STYLE = {  # part -> (scikit-image texture, RGB tint); shapes are mirror-symmetric so hflip maps layouts
    "disk": ("gravel", (250, 210, 30)),
    "square": ("brick", (225, 40, 45)),
    "triangle": ("grass", (40, 95, 235)),
}
# Classification backgrounds keep a photo's structure but mute its colour and contrast, so the
# saturated parts stand out: what defines a class must be learnable by a small ViT in a few epochs.
BACKGROUND_SATURATION, BACKGROUND_CONTRAST = 0.35, 0.7
PARTS = tuple(PART_STYLE)
CLASS_WORDS = ("alfa", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett",
               "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
               "uniform", "victor", "whiskey", "xray", "yankee", "zulu")
# Photographs shipped inside the scikit-image wheel (no download); the attack set uses them whole.
ATTACK_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina", "camera", "coins")
BACKGROUND_PHOTOS = ATTACK_PHOTOS
# ADE20K-150 ids (1-based, 0 = other) spelled as in mmseg's ADE20KDataset METAINFO: with
# ``metainfo=dict(classes=...)`` mmseg maps these ids onto 0..K-1 itself.
ADE_LABEL_IDS = {"wall": 1, "grass": 10, "rock": 35, "box": 42, "tent": 115, "ball": 120}
ADE_THINGS = {"box": ("square", "brick", (170, 120, 70)), "tent": ("triangle", "grass", (240, 135, 35)),
              "ball": ("disk", "gravel", (225, 45, 70))}
COCO_CATEGORIES = [{"id": i, "name": name, "supercategory": "shape"} for i, name in enumerate(PARTS, start=1)]
EVAL_CROP_PCT = 0.875  # ImageNet-C: Resize(256) + CenterCrop(224) of the clean validation image
JPEG_QUALITY_C = 85  # ImageNet-C files are JPEG; the quality is the one recorded in docs/FIDELITY.md
JPEG_QUALITY = 90
VERSIONED = ("imagecorruptions-imaug", "numpy", "pillow", "scikit-image", "scipy", "opencv-python", "pycocotools")
# What a previous run may have left under root; anything else means root is not ours to clear.
OWN_ENTRIES = {"imagenet", "imagenet-c", "imagenet-a", "imagenet-o", "ade20k", "coco", "attack",
               "layouts.json", "manifest.json"}


# ---------------------------------------------------------------------------------------------------
# entry point


def synthesize(params: dict, root: str | Path, log: Log = print, workers: int | None = None) -> Path:
    """Generate every embedded set under ``root``; return ``root``.

    ``root`` is cleared first and manifest.json is written last, so an interrupted run leaves no
    completion marker (Snakemake reruns it) and no stale files from an earlier run. ``workers``
    processes (default: one per available core) share the work; as with any multiprocessing, a script
    that calls this at import time needs the ``if __name__ == "__main__":`` guard (or ``workers=1``).
    """
    cfg = params["data"]["embedded"]
    _validate(cfg)
    grid, layouts = _layouts(cfg["num_classes"] + cfg["o_classes"], cfg["seed"])  # may fail: before clearing
    root = Path(root)
    clear_root(root)
    classes = class_names(cfg["num_classes"])
    downstream = [(make_ade20k, (root / "ade20k", cfg)), (make_coco, (root / "coco", cfg)),
                  (make_attack, (root / "attack", cfg, classes))]
    write_sets(root, cfg, classes, grid, layouts, EMBEDDED_MAKERS, downstream, cfg, log, workers)
    return root


def write_sets(root: Path, cfg: dict, classes: list[str], grid: int, layouts: list[Layout], makers: ClassMakers,
               downstream: list[tuple[Callable, tuple]], c_cfg: dict, log: Log, workers: int | None) -> None:
    """Every set of a generated layout into the cleared ``root``, the manifest last: ImageNet train/val
    (a job per class and split), -A and -O drawn by ``makers`` in the layout's format, and the
    ``downstream`` jobs, all in ``workers`` processes; then ImageNet-C from the written validation
    images (``c_cfg``: its seed, image size and images per class) and layouts.json.

    ``layouts``: one per training class, then the held-out ones of ImageNet-O."""
    make_class, make_a, make_o = makers
    seed, n = cfg["seed"], cfg["num_classes"]
    train_layouts = dict(zip(classes, layouts))
    a_classes = [classes[i] for i in _choose(seed, "imagenet-a/classes", n, cfg["a_classes"])]
    o_folders = dict(zip((classes[i] for i in _choose(seed, "imagenet-o/classes", n, cfg["o_classes"])), layouts[n:]))

    splits = (("train", cfg["train_per_class"]), ("val", cfg["val_per_class"]))
    summaries = run_jobs(workers, [
        *[(make_class, (root / "imagenet" / split, cfg, split, per_class, i, name, train_layouts[name], grid))
          for split, per_class in splits for i, name in enumerate(classes)],
        (make_a, (root / "imagenet-a", cfg, {name: train_layouts[name] for name in a_classes}, classes, grid)),
        (make_o, (root / "imagenet-o", cfg, o_folders, grid)),
        *downstream,
    ])
    for split, per_class in splits:
        log(f"synth: imagenet/{split}: {n * per_class} images, {n} classes")
    for summary in summaries[2 * n:]:
        log(summary)
    make_imagenet_c(root / "imagenet" / "val", root / "imagenet-c", c_cfg, log, workers)  # reads the val images
    _write_json(root / "layouts.json", {
        "grid": grid,
        "parts": list(PARTS),
        "train_classes": {name: _layout_json(layout) for name, layout in train_layouts.items()},
        "imagenet_o_folders": {name: _layout_json(layout) for name, layout in o_folders.items()},
        "imagenet_a_classes": a_classes,
    })
    write_manifest(root, cfg)
    log(f"synth: done, {root}")


def _validate(cfg: dict) -> None:
    """Cross-field checks the schema cannot express; each names the key."""
    limits = [
        ("a_classes", cfg["num_classes"], "num_classes"),
        ("o_classes", cfg["num_classes"], "num_classes (ImageNet-O folders reuse training-class names)"),
        ("corruption_per_class", cfg["val_per_class"], "val_per_class"),
        ("attack_images", len(ATTACK_PHOTOS), f"the {len(ATTACK_PHOTOS)} bundled photographs"),
    ]
    for key, limit, what in limits:
        if cfg[key] > limit:
            raise ConfigError(f"params: data.embedded.{key} is {cfg[key]}, expected at most {limit} ({what})")
    for key in ("image_size", "seg_image_size", "det_image_size"):
        if cfg[key] < 32:  # imagecorruptions and the grid of parts need at least 32 px
            raise ConfigError(f"params: data.embedded.{key} is {cfg[key]}, expected at least 32")


def clear_root(root: Path, section: str = "data.embedded") -> None:
    """Remove an earlier run's output (its manifest first), refusing folders that hold anything else.

    ``section``: the params section whose ``root`` this is, named in the errors.
    """
    if not root.exists():
        root.mkdir(parents=True)
        return
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; choose another {section}.root")
    foreign = sorted(p.name for p in root.iterdir() if p.name not in OWN_ENTRIES)
    if foreign:
        raise DataError(f"{root}: not a generated-dataset folder (contains {foreign[0]!r}); "
                        f"refusing to overwrite it, choose another {section}.root")
    (root / "manifest.json").unlink(missing_ok=True)
    for entry in sorted(root.iterdir()):
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def class_names(num_classes: int) -> list[str]:
    """``c00_alfa``, ``c01_bravo``, ...: zero-padded so ImageFolder's sorted order is the class index."""
    width = max(2, len(str(num_classes - 1)))
    return [f"c{i:0{width}d}_{CLASS_WORDS[i % 26]}{i // 26 or ''}" for i in range(num_classes)]


# ---------------------------------------------------------------------------------------------------
# randomness, photographs, sprites


def _rng(seed: int, key: str, index: int) -> np.random.Generator:
    """An independent stream per (seed, set, item), so items do not depend on generation order."""
    return np.random.default_rng([seed, zlib.crc32(key.encode()), index])


@functools.cache
def _photo(name: str) -> Image.Image:
    """A scikit-image photograph or texture as an RGB PIL image (bundled in the wheel)."""
    import skimage.data

    array = getattr(skimage.data, name)()
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(array[..., :3]))


def _crop(rng: np.random.Generator, name: str, size: Size, scale: tuple[float, float]) -> np.ndarray:
    """A random crop of a photograph resized to ``size`` (a side, or (height, width)): its long side is
    ``scale`` times the photograph's short side, its aspect that of ``size``."""
    photo = _photo(name)
    w, h = photo.size
    out_h, out_w = _hw(size)
    side = rng.uniform(*scale) * min(w, h)
    box_w, box_h = (side, side * out_h / out_w) if out_w >= out_h else (side * out_w / out_h, side)
    x0, y0 = rng.uniform(0, w - box_w), rng.uniform(0, h - box_h)
    crop = photo.resize((out_w, out_h), Image.Resampling.BILINEAR, box=(x0, y0, x0 + box_w, y0 + box_h))
    return np.asarray(crop, dtype=np.float32)


def _hw(size: Size) -> tuple[int, int]:
    """(height, width) of a square side or of a (height, width) pair."""
    return size if isinstance(size, tuple) else (size, size)


def draw_shape(seed: int, key: str, index: int, sides: tuple[int, int] | list[int]) -> tuple[int, int]:
    """An image's (height, width), each drawn from ``sides`` (inclusive) on a stream of its own."""
    low, high = sides
    height, width = _rng(seed, key, index).integers(low, high + 1, size=2)
    return int(height), int(width)


def _background(rng: np.random.Generator, size: Size) -> np.ndarray:
    image = _crop(rng, BACKGROUND_PHOTOS[rng.integers(len(BACKGROUND_PHOTOS))], size, (0.15, 0.6))
    return image[:, ::-1].copy() if rng.random() < 0.5 else image


def _mute(image: np.ndarray, saturation: float, contrast: float) -> np.ndarray:
    """Scale colour saturation (towards each pixel's grey) and contrast (towards the image mean)."""
    grey = image.mean(axis=2, keepdims=True)
    image = grey + saturation * (image - grey)
    return image.mean() + contrast * (image - image.mean())


def _texture(rng: np.random.Generator, texture: str, tint: tuple[int, int, int], size: int) -> np.ndarray:
    """A tinted crop of a grey scikit-image texture: the part's colour with natural detail."""
    bank = _texture_bank(texture, size)
    grey = bank[rng.integers(len(bank))]
    return np.asarray(tint, dtype=np.float32) * (0.45 + 0.55 * grey) * rng.uniform(0.85, 1.15)


@functools.cache
def _texture_bank(texture: str, size: int, count: int = 32) -> np.ndarray:
    """``count`` fixed random crops (size x size x 1, 0..1) of a texture: a part's material, cut once per
    process instead of once per image (the same bank for every seed)."""
    rng = _rng(0, f"texture-bank/{texture}", size)
    bank = np.stack([_crop(rng, texture, size, (0.05, 0.15))[..., :1] / 255.0 for _ in range(count)])
    bank.flags.writeable = False
    return bank


@functools.cache
def _shape_alpha(shape: str, px: int) -> np.ndarray:
    """Anti-aliased coverage (px x px, 0..1) of a shape, drawn 4x supersampled."""
    n = 4 * px
    canvas = Image.new("L", (n, n), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "disk":
        draw.ellipse((0, 0, n - 1, n - 1), fill=255)
    elif shape == "square":
        draw.rectangle((n // 10, n // 10, n - 1 - n // 10, n - 1 - n // 10), fill=255)
    else:  # an upright isosceles triangle: mirror-symmetric like the other two
        draw.polygon([(n / 2, 0), (n - 1, n - 1), (0, n - 1)], fill=255)
    alpha = np.asarray(canvas.resize((px, px), Image.Resampling.BOX), dtype=np.float32) / 255.0
    alpha.flags.writeable = False  # cached and shared
    return alpha


def _paste(image: np.ndarray, fill: np.ndarray, alpha: np.ndarray, y: int, x: int) -> None:
    """Alpha-blend ``fill`` into ``image`` at (y, x), clipped to the image."""
    h, w = alpha.shape
    y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + h, image.shape[0]), min(x + w, image.shape[1])
    if y0 >= y1 or x0 >= x1:
        return
    a = alpha[y0 - y:y1 - y, x0 - x:x1 - x, None]
    image[y0:y1, x0:x1] = a * fill[y0 - y:y1 - y, x0 - x:x1 - x] + (1 - a) * image[y0:y1, x0:x1]


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _save(array: np.ndarray, path: Path, **kwargs) -> None:
    image = Image.fromarray(array)
    try:
        image.save(path, **kwargs)
    except FileNotFoundError:  # first file of its folder: metadata calls are slow, so only then
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, **kwargs)


def run_jobs(workers: int | None, jobs: list[tuple[Callable, tuple]]) -> list:
    """Run independent jobs in ``workers`` processes (default: one per available core); return their results.

    The bytes written do not depend on the schedule: every item draws from its own random stream.
    Workers fork from a fresh forkserver that has imported the generator's libraries, never from the
    caller, which may hold threads (torch, OpenCV) that make a plain fork unsafe.
    """
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(workers, len(jobs))
    if workers < 2:
        return [job(*args) for job, args in jobs]
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__, "skimage.data", "imagecorruptions", "pycocotools.mask", "scipy.ndimage"])
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = [pool.submit(job, *args) for job, args in jobs]
        try:
            return [future.result() for future in futures]
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise


def _write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------------
# classification: layouts of parts


def _layouts(n: int, seed: int, section: str = "data.embedded") -> tuple[int, list[Layout]]:
    """``n`` distinct layouts (part -> grid cell), drawn in a seeded order and kept greedily.

    A candidate is kept if it differs from every kept layout, and from every kept layout's horizontal
    mirror, in the cells of at least two parts (well-separated classes), and is not its own mirror.
    """
    cells = [(r, c) for r in range(GRID) for c in range(GRID)]
    candidates = list(itertools.permutations(cells, len(PARTS)))
    kept: list[tuple[tuple[int, int], ...]] = []
    for index in _rng(seed, "layouts", 0).permutation(len(candidates)):
        layout = candidates[index]
        mirrored = tuple((r, GRID - 1 - c) for r, c in layout)
        if mirrored == layout or any(_differences(layout, k) < 2 or _differences(mirrored, k) < 2 for k in kept):
            continue
        kept.append(layout)
        if len(kept) == n:
            return GRID, [dict(zip(PARTS, layout)) for layout in kept]
    raise ConfigError(f"params: {section}.num_classes + o_classes is {n}, expected at most {len(kept)} "
                      f"(distinct flip-safe layouts of {len(PARTS)} parts on a {GRID}x{GRID} grid)")


def _differences(a: tuple, b: tuple) -> int:
    return sum(x != y for x, y in zip(a, b))


def _layout_json(layout: Layout) -> dict[str, list[int]]:
    return {part: list(cell) for part, cell in layout.items()}


def _render_layout(rng: np.random.Generator, layout: Layout, grid: int, size: Size, hard: bool = False) -> np.ndarray:
    """One image of a layout: a photo background with each part in its cell, slightly jittered.

    ``size``: a side, or (height, width); the grid then covers the centred square of the short side.
    ``hard`` (the ImageNet-A-like set) jitters further, blends the parts into the background and adds a
    distractor shape: the same class, harder to recognise.
    """
    height, width = _hw(size)
    image = _mute(_background(rng, size), BACKGROUND_SATURATION, BACKGROUND_CONTRAST)
    side = min(height, width)
    cell = side // grid
    top, left = (height - cell * grid) // 2, (width - cell * grid) // 2
    px = max(3, round(0.8 * cell))
    jitter = (cell - px) // 2 + (cell // 4 if hard else 0)
    opacity = rng.uniform(0.55, 0.8) if hard else 1.0
    for part in PARTS:
        r, c = layout[part]
        dy, dx = rng.integers(-jitter, jitter + 1, size=2)
        texture, tint = PART_STYLE[part]
        _paste(image, _texture(rng, texture, tint, px), opacity * _shape_alpha(part, px),
               top + r * cell + (cell - px) // 2 + dy, left + c * cell + (cell - px) // 2 + dx)
    if hard:
        shape = PARTS[rng.integers(len(PARTS))]
        tint = tuple(int(v) for v in rng.integers(0, 256, size=3))
        texture = PART_STYLE[PARTS[rng.integers(len(PARTS))]][0]
        y, x = rng.integers(0, side - px, size=2)  # inside the centred square
        _paste(image, _texture(rng, texture, tint, px), _shape_alpha(shape, px),
               int(y) + (height - side) // 2, int(x) + (width - side) // 2)
    return _to_uint8(image)


def _choose(seed: int, key: str, n: int, k: int) -> list[int]:
    """``k`` of ``n`` indices, sorted (like ImageFolder's class order)."""
    return sorted(int(i) for i in _rng(seed, key, 0).choice(n, k, replace=False))


def make_imagenet_class(out: Path, cfg: dict, split: str, per_class: int, index: int, name: str, layout: Layout,
                        grid: int) -> None:
    """imagenet/<split>/<class>/<split>_<j>.png (PNG: lossless, so ImageNet-C starts from the clean pixels)."""
    for j in range(per_class):
        image = _render_layout(_rng(cfg["seed"], f"imagenet/{split}/{index}", j), layout, grid, cfg["image_size"])
        _save(image, out / name / f"{split}_{j:05d}.png")


def make_imagenet_a(out: Path, cfg: dict, layouts: dict[str, Layout], classes: list[str], grid: int) -> str:
    """imagenet-a/<class>/*.jpg: hard renderings (see ``_render_layout``) of some training classes."""
    for name, layout in layouts.items():
        index = classes.index(name)
        for j in range(cfg["a_per_class"]):
            image = _render_layout(_rng(cfg["seed"], f"imagenet-a/{index}", j), layout, grid, cfg["image_size"], hard=True)
            _save(image, out / name / f"a_{j:05d}.jpg", quality=JPEG_QUALITY)
    return f"synth: imagenet-a: {len(layouts) * cfg['a_per_class']} images, {len(layouts)} classes"


def make_imagenet_o(out: Path, cfg: dict, folders: dict[str, Layout], grid: int) -> str:
    """imagenet-o/<class>/*.jpg: folders named like training classes, showing layouts never trained on.

    Like ImageNet-O, whose OOD images sit under the ImageNet-1k class they are mistaken for: the
    folder names a training class, but the content belongs to no training class.
    """
    for k, (name, layout) in enumerate(folders.items()):
        for j in range(cfg["o_per_class"]):
            image = _render_layout(_rng(cfg["seed"], f"imagenet-o/{k}", j), layout, grid, cfg["image_size"])
            _save(image, out / name / f"o_{j:05d}.jpg", quality=JPEG_QUALITY)
    return f"synth: imagenet-o: {len(folders) * cfg['o_per_class']} images, {len(folders)} held-out layouts"


# the ImageNet-style sets' image makers (write_sets), one per generated layout
ClassMakers = tuple[Callable, Callable, Callable]  # (make_imagenet_class, make_imagenet_a, make_imagenet_o)
EMBEDDED_MAKERS: ClassMakers = (make_imagenet_class, make_imagenet_a, make_imagenet_o)



# ---------------------------------------------------------------------------------------------------
# ImageNet-C


def _resize_center_crop(image: Image.Image, size: int, crop_pct: float = EVAL_CROP_PCT) -> np.ndarray:
    """Resize(floor(size / crop_pct)) + CenterCrop(size) (bilinear), as an H x W x 3 float array."""
    from vitpe.data.transforms import eval_transform

    pixels = eval_transform(size, crop_pct, interpolation="bilinear", output="uint8")(image.convert("RGB"))
    return pixels.permute(1, 2, 0).numpy().astype(np.float64)


def _corrupt(clean: np.ndarray, corruption: str, severity: int, seed: int, key: str, index: int) -> np.ndarray:
    """imagecorruptions' ``corrupt`` made reproducible: seed NumPy's global RNG (most corruptions draw
    from it) and pass ``seed=`` where the function takes one (glass_blur, impulse_noise: their own RNGs).
    spatter can divide by zero on a small image and return black: redraw with the next seed."""
    from imagecorruptions import corrupt

    for attempt in range(10):
        item_seed = int(_rng(seed, f"{key}/{attempt}", index).integers(2**31 - 1))
        np.random.seed(item_seed)
        kwargs = {"seed": item_seed} if _takes_seed(corruption) else {}
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = corrupt(clean, severity=severity, corruption_name=corruption, **kwargs)
        if out.max() > 0:
            return out
    raise RuntimeError(f"imagecorruptions {corruption} severity {severity} gave a black image 10 times")


@functools.cache
def _takes_seed(corruption: str) -> bool:
    from imagecorruptions import corruption_dict

    return "seed" in inspect.signature(corruption_dict[corruption]).parameters


def _cache_glass_blur_kernel() -> None:
    """Let numba cache imagecorruptions' glass_blur kernel on disk, as ``@njit(cache=True)`` would.

    The library compiles it with a plain ``@njit()`` in every process, about 6 s (two type signatures)
    of a run that otherwise takes a few seconds. Caching changes no output; where numba finds no
    writable cache location it compiles as before.
    """
    from imagecorruptions import corruptions

    kernel = getattr(corruptions, "_shuffle_pixels_njit_glass_blur", None)
    try:
        kernel.enable_caching()
    except Exception:  # noqa: BLE001  (another library version or no cache location: just slower)
        pass


def make_imagenet_c(val_root: Path, out: Path, cfg: dict, log: Log, workers: int | None = None) -> None:
    """imagenet-c/<corruption>/<severity>/<class>/<stem>.JPEG from the first val images of each class.

    The real protocol: Resize + CenterCrop of the clean validation image, corrupt, save as JPEG.
    """
    size, per_class = cfg["image_size"], cfg["corruption_per_class"]
    sources = []
    for class_dir in sorted(p for p in val_root.iterdir() if p.is_dir()):
        for path in sorted(class_dir.iterdir())[:per_class]:
            with Image.open(path) as image:
                clean = _to_uint8(_resize_center_crop(image, size))
            sources.append((f"{class_dir.name}/{path.stem}.JPEG", clean))
    run_jobs(workers, [(make_corrupted, (out / corruption / str(severity), cfg, corruption, severity, sources))
              for corruption in ALL_CORRUPTIONS for severity in SEVERITIES])
    log(f"synth: imagenet-c: {len(ALL_CORRUPTIONS) * len(SEVERITIES) * len(sources)} images "
        f"({len(ALL_CORRUPTIONS)} corruptions x {len(SEVERITIES)} severities x {len(sources)})")


def make_corrupted(out: Path, cfg: dict, corruption: str, severity: int, sources: list[tuple[str, np.ndarray]]) -> None:
    """One <corruption>/<severity> folder of ImageNet-C: every source image, corrupted, as JPEG."""
    _cache_glass_blur_kernel()
    key = f"imagenet-c/{corruption}/{severity}"
    for index, (name, clean) in enumerate(sources):
        image = _corrupt(clean, corruption, severity, cfg["seed"], key, index)
        _save(image, out / name, format="JPEG", quality=JPEG_QUALITY_C)


# ---------------------------------------------------------------------------------------------------
# ADE20K


def _ade_sample(rng: np.random.Generator, size: Size) -> tuple[np.ndarray, np.ndarray]:
    """A scene: wall (with an unlabelled picture on it) above a wavy horizon, grass or rock below, and
    one to three things (box, tent, ball) in front. ``size``: a side, or (height, width).
    Returns (RGB uint8, ADE label map uint8)."""
    height, width = _hw(size)
    label = np.zeros((height, width), dtype=np.uint8)
    image = np.empty((height, width, 3), dtype=np.float32)
    rows = np.arange(height)[:, None]
    horizon = rng.uniform(0.35, 0.65) * height + rng.uniform(1, 4) * np.sin(
        np.arange(width) * 2 * np.pi / rng.uniform(width / 2, 2 * width) + rng.uniform(0, 2 * np.pi))
    top = rows < np.rint(horizon)[None, :]
    ground = "grass" if rng.random() < 0.5 else "rock"
    stuff = [("wall", top, "brick", (205, 190, 160)),
             (ground, ~top, ground if ground == "grass" else "gravel",
              (90, 170, 70) if ground == "grass" else (150, 145, 140))]
    for name, region, texture, tint in stuff:
        fill = np.asarray(tint, np.float32) * (0.45 + 0.55 * _crop(rng, texture, size, (0.3, 0.7))[..., :1] / 255)
        image[region] = fill[region]
        label[region] = ADE_LABEL_IDS[name]
    # "other" (id 0): a photograph hung on the wall, like the unlabelled pixels of real ADE20K scenes
    side = int(rng.uniform(0.2, 0.3) * min(height, width))
    y, x = int(rng.integers(1, max(2, int(horizon.min()) - side))), int(rng.integers(0, width - side))
    image[y:y + side, x:x + side] = _crop(rng, BACKGROUND_PHOTOS[rng.integers(len(BACKGROUND_PHOTOS))], side, (0.3, 0.8))
    label[y:y + side, x:x + side] = 0
    for _ in range(rng.integers(1, 4)):
        thing = list(ADE_THINGS)[rng.integers(len(ADE_THINGS))]
        shape, texture, tint = ADE_THINGS[thing]
        px = int(rng.uniform(0.15, 0.35) * min(height, width))
        alpha = _shape_alpha(shape, px)
        y, x = int(rng.integers(0, height - px)), int(rng.integers(0, width - px))
        _paste(image, _texture(rng, texture, tint, px), alpha, y, x)
        label[y:y + px, x:x + px][alpha >= 0.5] = ADE_LABEL_IDS[thing]
    return _to_uint8(image), label


def make_ade20k(out: Path, cfg: dict, sides: tuple[int, int] | None = None) -> str:
    """ade20k/images/<split>/ADE_<split>_%08d.jpg + annotations/<split>/*.png (mode L) + classes.json.

    Square images of ``cfg["seg_image_size"]``, or with ``sides`` each image's height and width drawn
    from that range.
    """
    seed = cfg["seed"]
    for split, prefix, count in (("training", "ADE_train", cfg["seg_train"]),
                                 ("validation", "ADE_val", cfg["seg_val"])):
        for i in range(1, count + 1):
            size = cfg["seg_image_size"] if sides is None else draw_shape(seed, f"ade20k/{split}/shape", i, sides)
            image, label = _ade_sample(_rng(seed, f"ade20k/{split}", i), size)
            _save(image, out / "images" / split / f"{prefix}_{i:08d}.jpg", quality=JPEG_QUALITY)
            _save(label, out / "annotations" / split / f"{prefix}_{i:08d}.png")
    _write_json(out / "classes.json", {"classes": sorted(ADE_LABEL_IDS, key=ADE_LABEL_IDS.get),
                                       "label_ids": ADE_LABEL_IDS})
    return f"synth: ade20k: {cfg['seg_train']} training + {cfg['seg_val']} validation scenes"


# ---------------------------------------------------------------------------------------------------
# COCO


def _polygon(rng: np.random.Generator, shape: str, cx: float, cy: float, radius: float) -> list[float]:
    """A disk (16-gon), square or triangle around (cx, cy) at a random rotation, as COCO's flat [x, y, ...]."""
    corners = {"disk": 16, "square": 4, "triangle": 3}[shape]
    angles = rng.uniform(0, 2 * np.pi) + np.arange(corners) * 2 * np.pi / corners
    points = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)
    return [round(float(v), 2) for v in points.ravel()]


def _rasterize(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """The mask pycocotools (and so every COCO loader) draws for these polygons."""
    from pycocotools import mask as mask_utils

    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))).astype(bool)


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (crowd annotations): run lengths over the column-major pixels, zeros first.

    pycocotools only writes the compressed string form; this is the list form crowd annotations use.
    """
    flat = mask.ravel(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return {"counts": ([0] + runs) if flat[0] else runs, "size": list(mask.shape)}


def _coco_sample(rng: np.random.Generator, size: Size, crowd: bool) -> tuple[np.ndarray, list[dict]]:
    """A photo background (``size``: a side, or (height, width)) with 1-4 non-overlapping shapes (and a
    crowd of small ones if ``crowd``). Returns (RGB uint8, annotations without ids, each naming its
    ``part``); area and bbox come from the rasterized mask."""
    from scipy.ndimage import binary_dilation

    height, width = _hw(size)
    extent = np.array([width, height], dtype=np.float64)  # (x, y) bounds of the centres
    image = _background(rng, size)
    occupied = np.zeros((height, width), dtype=bool)
    anns = []
    kinds = ["crowd"] * crowd + ["instance"] * int(rng.integers(1, 5))
    for kind in kinds:
        category = int(rng.integers(len(PARTS)))
        shape = PARTS[category]
        for _ in range(50):  # rejection sampling: instances never touch, so every mask is fully visible
            if kind == "crowd":  # a group of small shapes annotated as one crowd region
                cx, cy = rng.uniform(0.25 * extent, 0.75 * extent, size=2)
                polygons = [_polygon(rng, shape, cx + dx, cy + dy, rng.uniform(1.5, 3.0))
                            for dx, dy in rng.uniform(-0.15 * extent, 0.15 * extent, size=(int(rng.integers(3, 6)), 2))]
            else:
                radius = rng.uniform(0.1, 0.22) * min(height, width)
                cx, cy = rng.uniform(radius + 1, extent - radius - 1, size=2)
                polygons = [_polygon(rng, shape, cx, cy, radius)]
            mask = _rasterize(polygons, height, width)
            if mask.any() and not (binary_dilation(mask) & occupied).any():
                break
        else:
            continue
        occupied |= mask
        texture, tint = PART_STYLE[shape]
        image[mask] = _texture(rng, texture, tint, max(height, width))[:height, :width][mask]
        ys, xs = np.nonzero(mask)
        anns.append({
            "part": shape,
            "segmentation": _uncompressed_rle(mask) if kind == "crowd" else polygons,
            "area": int(mask.sum()),
            "bbox": [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())],
            "iscrowd": int(kind == "crowd"),
        })
    return _to_uint8(image), anns


@dataclass(frozen=True)
class CocoLabels:
    """What a COCO set calls its shapes: the JSON's categories, each part's category id, a description."""

    categories: list[dict]
    part_ids: dict[str, int]
    description: str


EMBEDDED_COCO = CocoLabels(COCO_CATEGORIES, {c["name"]: c["id"] for c in COCO_CATEGORIES},
                           "vitpe embedded COCO-style instances (shapes on photographs)")


def make_coco(out: Path, cfg: dict, sides: tuple[int, int] | None = None, labels: CocoLabels = EMBEDDED_COCO) -> str:
    """coco/{train2017,val2017}/%012d.jpg + annotations/instances_<split>.json (ids unique across splits).

    Square images of ``cfg["det_image_size"]``, or with ``sides`` each image's height and width drawn
    from that range.
    """
    seed = cfg["seed"]
    image_id = ann_id = 0
    summary = []
    for split, count in (("train2017", cfg["det_train"]), ("val2017", cfg["det_val"])):
        images, annotations = [], []
        for i in range(count):
            image_id += 1
            size = cfg["det_image_size"] if sides is None else draw_shape(seed, f"coco/{split}/shape", i, sides)
            # every fourth image has a crowd region, so each split has one (mmdet ignores them in training)
            image, anns = _coco_sample(_rng(seed, f"coco/{split}", i), size, crowd=i % 4 == 0)
            file_name = f"{image_id:012d}.jpg"
            _save(image, out / split / file_name, quality=JPEG_QUALITY)
            height, width = _hw(size)
            images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
            for ann in anns:
                ann_id += 1
                annotations.append({"id": ann_id, "image_id": image_id, "category_id": labels.part_ids[ann.pop("part")],
                                    **ann})
        _write_json(out / "annotations" / f"instances_{split}.json", {
            "info": {"description": labels.description},
            "licenses": [], "images": images, "annotations": annotations, "categories": labels.categories,
        })
        summary.append(f"{split} {count} images, {len(annotations)} instances")
    return f"synth: coco: {'; '.join(summary)}"


# ---------------------------------------------------------------------------------------------------
# attack photographs, manifest


def make_attack(out: Path, cfg: dict, classes: list[str]) -> str:
    """attack/<class>/<photo>.png: whole photographs (centre-cropped), labels round-robin over the classes."""
    size = cfg["image_size"]
    for i, name in enumerate(ATTACK_PHOTOS[: cfg["attack_images"]]):
        image = _to_uint8(_resize_center_crop(_photo(name), size, crop_pct=1.0))
        _save(image, out / classes[i % len(classes)] / f"{name}.png")
    return f"synth: attack: {cfg['attack_images']} photographs"


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def write_manifest(root: Path, cfg: dict) -> None:
    """manifest.json: every file's sha256, the versions that shape the bytes, the parameters. Written
    last (atomically): its presence means the set is complete."""
    from vitpe.io import write_json

    paths = sorted(path for folder, _, names in os.walk(root) for name in names
                   if (path := Path(folder, name).relative_to(root).as_posix()) != "manifest.json")
    # thousands of small files: overlap the file-system latency (hashlib and reads release the GIL)
    with ThreadPoolExecutor(8) as pool:
        digests = list(pool.map(lambda path: hashlib.sha256((root / path).read_bytes()).hexdigest(), paths))
    write_json(root / "manifest.json", {
        "files": [{"path": path, "sha256": digest} for path, digest in zip(paths, digests)],
        "versions": {package: _version(package) for package in VERSIONED},
        "params": {key: value for key, value in cfg.items() if key != "root"},
    })
