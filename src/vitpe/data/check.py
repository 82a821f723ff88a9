"""Layout checks for every dataset the study reads, embedded or real: fail early with one line naming the path.

Every training job waits for ``results/checks/<scale>/data.json``, written by ``vitpe data check``: a
missing folder, a wrong class count or an unreadable file then fails in seconds rather than hours
into a job. A quick check decodes a sample of the images (always the first and the last file);
``deep=True`` (``vitpe data check --deep``) decodes every one, on a thread pool sized to the usable
cores (Pillow decodes without the GIL), reporting progress, and applies every per-image check to each:
damage that only decoding reveals (a truncated JPEG, a corrupt PNG chunk) then fails the check, not a
training job days later. Decoding is strict whatever a library set: ``ImageFile.LOAD_TRUNCATED_IMAGES``
is False during a check.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile
from tqdm import tqdm

from vitpe.data.paths import dataset_paths, num_classes as configured_classes
from vitpe.data.subsets import ALL_CORRUPTIONS, BENCHMARK_CORRUPTIONS, EXTRA_CORRUPTIONS, SEVERITIES, class_index_mask
from vitpe.errors import ConfigError, DataError
from vitpe.io import read_json

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
SAMPLE = 64  # images decoded per folder by a quick check
PROGRESS_EVERY = 10_000  # images between the progress lines of a deep check (when stderr is no terminal)
CHUNK = 1024  # images handed to the pool at a time: the first bad one stops the check within a chunk
Log = Callable[[str], None]
ADE_CLASSES = 150
# The generated sets (data kind -> the command that writes them); their manifest.json marks them complete.
GENERATED = {"embedded": "vitpe data synth", "mini": "vitpe data synth --layout real"}
KINDS = ("imagenet", "imagefolder", "imagenet_c", "imagenet_a", "imagenet_o", "ade20k", "coco", "attack")


def check_dataset(kind: str, path: str | Path, num_classes: int | None = None, deep: bool = False,
                  train_classes: str | Path | list[str] | None = None, log: Log | None = None) -> dict:
    """Check one dataset of ``kind`` at ``path``; return counts (JSON-ready) or raise DataError.

    ``num_classes``: the expected number of class folders (for ade20k: the largest label id, default
    150). ``train_classes``: the training folder (or its class list); subset folders must be training
    classes, and their class-index mask is reported. ``deep``: decode every image (progress to ``log``).
    """
    with _strict_decoding():
        return _check_kind(kind, Path(path), num_classes, _Decoding(deep, log), train_classes)


def _check_kind(kind: str, path: Path, num_classes: int | None, decoding: _Decoding, train_classes) -> dict:
    if kind == "imagenet":
        splits = {split: _image_folder(_folder(path / split, "train/ and val/ ImageFolders"), num_classes, decoding)
                  for split in ("train", "val")}
        if splits["val"]["class_names"] != splits["train"]["class_names"]:
            raise DataError(f"{path / 'val'}: class folders differ from {path / 'train'}")
        return _totals({split: _drop_names(result) for split, result in splits.items()}, path)
    if kind in ("imagefolder", "imagenet_a", "imagenet_o", "attack"):
        result = _image_folder(_folder(path, "an ImageFolder: <class>/<image>"), num_classes, decoding)
        if train_classes is not None:
            result["class_index_mask"] = class_index_mask(train_classes, path)
        return _drop_names(result)
    if kind == "imagenet_c":
        return _imagenet_c(path, num_classes, decoding, train_classes)
    if kind == "ade20k":
        return _ade20k(path, ADE_CLASSES if num_classes is None else num_classes, decoding)
    if kind == "coco":
        return _coco(path, decoding)
    raise ConfigError(f"unknown dataset kind {kind!r} (known: {', '.join(KINDS)})")


def check_all(params: dict, datasets: list[str] | None = None, log: Log = print, deep: bool = False) -> dict:
    """Check the active scale's datasets (all, or the named ones); log one ``check:`` line per dataset."""
    paths = dataset_paths(params)
    scale = params["scale"]
    data = params["scales"][scale]["data"]
    if data in GENERATED:
        manifest = Path(params["data"][data]["root"]) / "manifest.json"
        if not manifest.is_file():
            raise DataError(f"{manifest}: missing; the {data} set is absent or incomplete (run `{GENERATED[data]}`)")
    names = list(datasets or paths)
    for name in names:
        if name not in paths:
            raise ConfigError(f"--dataset {name}: not a dataset of the {scale} scale (known: {', '.join(paths)})")
    report = {"scale": scale, "data": data, "deep": deep, "datasets": {}}
    for name in names:
        result = check_dataset(name, paths[name], deep=deep, log=log, **_expectations(params, name, paths, data))
        report["datasets"][name] = result
        log(f"check: {name} ({paths[name]}): ok, {result['images']} images, {result['checked']} decoded")
    return report


def _expectations(params: dict, name: str, paths: dict[str, Path], data: str) -> dict:
    """What each dataset must hold at the active scale: class counts, and which training classes.

    ImageNet-A/-O classes must be training classes; their number is checked only where the config
    states it (the generated sets' a_classes / o_classes), so a class subset of the real sets passes.
    """
    train = paths["imagenet"] / "train"
    cfg = params["data"][data] if data in GENERATED else {}
    subset_classes = {"imagenet_a": cfg.get("a_classes"), "imagenet_o": cfg.get("o_classes")}
    return {
        "imagenet": {"num_classes": configured_classes(params)},
        "imagenet_c": {"num_classes": configured_classes(params), "train_classes": train},
        "imagenet_a": {"num_classes": subset_classes["imagenet_a"], "train_classes": train},
        "imagenet_o": {"num_classes": subset_classes["imagenet_o"], "train_classes": train},
        "ade20k": {"num_classes": ADE_CLASSES},
        "coco": {},
        "attack": {"train_classes": train},
    }[name]


# ---------------------------------------------------------------------------------------------------
# building blocks


def _folder(path: Path, expected: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{path}: missing folder (expected {expected})")
    return path


@contextlib.contextmanager
def _strict_decoding() -> Iterator[None]:
    """A cut-off image is an error while checking, even if a library let Pillow pad such images."""
    previous, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


class _Decoding:
    """How a check decodes: a sample, sequentially (quick), or every image on a thread pool (deep)."""

    def __init__(self, deep: bool, log: Log | None) -> None:
        self.deep, self.log = deep, log

    def run(self, check: Callable[..., Any], items: Sequence[tuple], what: Path) -> list[Any]:
        """``check(*item)`` for every item, in order; the first DataError in that order propagates."""
        if not self.deep or len(items) <= 1:
            return [check(*item) for item in items]
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        terminal = sys.stderr.isatty()
        results: list[Any] = []
        with ThreadPoolExecutor(max_workers=workers) as pool, \
                tqdm(total=len(items), desc=f"decoding {what}", unit="img", disable=not terminal) as bar:
            for start in range(0, len(items), CHUNK):
                chunk = items[start:start + CHUNK]
                results += pool.map(lambda item: check(*item), chunk)
                bar.update(len(chunk))
                done = start + len(chunk)
                if not terminal and self.log is not None and done // PROGRESS_EVERY > start // PROGRESS_EVERY:
                    self.log(f"decoded {done}/{len(items)} images of {what}")
        return results


#: pixel modes the ImageFolder loaders' ``Image.convert("RGB")`` clips to 0..255 instead of scaling (a
#: 16-bit photo trains as a white image); CMYK, grayscale and palette images (ImageNet holds some CMYK
#: and grayscale JPEGs) convert faithfully and are accepted
CLIPPED_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")


def _decodable(path: Path) -> None:
    """An image of an ImageFolder: it decodes, and converting it to RGB keeps its pixels."""
    mode = _decode(path).mode
    if mode in CLIPPED_MODES:
        raise DataError(f"{path}: {mode} pixels (16/32-bit), which the loader's RGB conversion clips to 8 bits; "
                        "expected an 8-bit image (RGB, grayscale, CMYK or palette)")


def _decode(path: Path) -> Image.Image:
    """Fully decode an image (a truncated file parses its header fine; only decoding finds the cut)."""
    try:
        image = Image.open(path)
        image.load()  # also closes the file of a single-frame image
        return image
    except Exception as exc:  # Pillow's plugins raise OSError, SyntaxError, EOFError, struct.error, ...
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{path}: not a readable image ({reason})") from None


def _sample(files: list, every: bool) -> list:
    """Every file, or an evenly spaced sample that always includes the first and the last."""
    if every or len(files) <= SAMPLE:
        return files
    return [files[i] for i in sorted(set(np.linspace(0, len(files) - 1, SAMPLE).round().astype(int).tolist()))]


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _image_folder(path: Path, num_classes: int | None, decoding: _Decoding) -> dict:
    """An ImageFolder as torchvision reads it: class folders, each with at least one image file."""
    classes = sorted(p for p in path.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{path}: no class folders (expected <class>/<image> files)")
    if num_classes is not None and len(classes) != num_classes:
        raise DataError(f"{path}: {len(classes)} class folders, expected {num_classes}")
    files = []
    for folder in classes:
        images = _images_in(folder)
        if not images:
            raise DataError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
        files += images
    checked = _sample(files, decoding.deep)
    decoding.run(_decodable, [(file,) for file in checked], path)
    return {"path": str(path), "classes": len(classes), "images": len(files), "checked": len(checked),
            "class_names": [p.name for p in classes]}


def _drop_names(result: dict) -> dict:
    return {key: value for key, value in result.items() if key != "class_names"}


def _totals(parts: dict[str, dict], path: Path) -> dict:
    """Per-split results plus overall image counts (for the one-line summary)."""
    return {"path": str(path), **parts, "images": sum(p["images"] for p in parts.values()),
            "checked": sum(p["checked"] for p in parts.values())}


# ---------------------------------------------------------------------------------------------------
# the kinds with their own layouts


def _imagenet_c(path: Path, num_classes: int | None, decoding: _Decoding, train_classes) -> dict:
    """<corruption>/<severity>/<class>/<image>: the 15 benchmark corruptions are required; the 4 extras
    (released separately) are checked when present. Every severity has the same class folders."""
    _folder(path, "<corruption>/<severity>/<class>/<image>")
    unknown = sorted(p.name for p in path.iterdir() if p.is_dir() and p.name not in ALL_CORRUPTIONS)
    if unknown:
        raise DataError(f"{path / unknown[0]}: not an ImageNet-C corruption (expected one of {', '.join(ALL_CORRUPTIONS)})")
    corruptions = list(BENCHMARK_CORRUPTIONS) + [c for c in EXTRA_CORRUPTIONS if (path / c).exists()]
    images = checked = 0
    reference: tuple[Path, list[str]] | None = None
    for corruption in corruptions:
        for severity in SEVERITIES:
            folder = _folder(path / corruption / str(severity), f"severity {severity} of {corruption}")
            result = _image_folder(folder, num_classes, decoding)
            if reference is None:
                reference = (folder, result["class_names"])
            elif result["class_names"] != reference[1]:
                raise DataError(f"{folder}: class folders differ from {reference[0]}")
            images += result["images"]
            checked += result["checked"]
    out = {"path": str(path), "corruptions": corruptions, "severities": list(SEVERITIES),
           "classes": len(reference[1]), "images": images, "checked": checked,
           "extras": [c for c in corruptions if c in EXTRA_CORRUPTIONS]}
    if train_classes is not None:
        class_index_mask(train_classes, reference[0])  # every class folder must be a training class
    return out


def _ade20k(path: Path, num_classes: int, decoding: _Decoding) -> dict:
    """images/<split>/*.jpg with annotations/<split>/<same stem>.png: one label map (0 = other, ids
    1..num_classes) per image, of the image's size."""
    splits, max_label = {}, 0
    for split in ("training", "validation"):
        image_dir = _folder(path / "images" / split, "ADEChallengeData2016 layout: images/<split>/*.jpg")
        ann_dir = _folder(path / "annotations" / split, "ADEChallengeData2016 layout: annotations/<split>/*.png")
        images = sorted(image_dir.glob("*.jpg"))
        if not images:
            raise DataError(f"{image_dir}: no .jpg images")
        for image in images:
            if not (ann_dir / f"{image.stem}.png").is_file():
                raise DataError(f"{image}: no annotation ({ann_dir / (image.stem + '.png')} is missing)")
        checked = _sample(images, decoding.deep)
        tops = decoding.run(_ade_pair, [(image, ann_dir / f"{image.stem}.png", num_classes) for image in checked],
                        image_dir)
        max_label = max([max_label, *tops])
        splits[split] = {"images": len(images), "checked": len(checked)}
    return {**_totals(splits, path), "num_classes": num_classes, "max_label": max_label}


def _ade_pair(image: Path, ann: Path, num_classes: int) -> int:
    """One ADE20K image and its label map; returns the map's largest label."""
    label = np.asarray(_decode(ann))
    if label.ndim != 2:
        raise DataError(f"{ann}: expected a single-channel label map, got shape {label.shape}")
    if label.shape != _decode(image).size[::-1]:
        raise DataError(f"{ann}: size {label.shape[1]}x{label.shape[0]} differs from its image {image}")
    top = int(label.max())
    if top > num_classes:
        raise DataError(f"{ann}: label value {top} out of range (expected 0..{num_classes}, 0 = other)")
    return top


def _coco(path: Path, decoding: _Decoding) -> dict:
    """{train2017,val2017}/ images listed by annotations/instances_<split>.json (COCO instances format)."""
    splits = {}
    for split in ("train2017", "val2017"):
        ann_file = path / "annotations" / f"instances_{split}.json"
        image_dir = _folder(path / split, f"COCO layout: {split}/ with annotations/instances_{split}.json")
        if not ann_file.is_file():
            raise DataError(f"{ann_file}: missing file (expected COCO instances annotations)")
        doc = read_json(ann_file, "COCO instances annotation file", require_object=True)
        for key in ("images", "annotations", "categories"):
            if not isinstance(doc.get(key), list):
                raise DataError(f"{ann_file}: missing {key} (expected a COCO instances file with images, "
                                "annotations and categories lists)")
        sizes = {}
        for index, info in enumerate(doc["images"]):
            _coco_fields(info, COCO_IMAGE_FIELDS, ann_file, "image", index)
            _coco_unique(info["id"], sizes, ann_file, "image")
            file = image_dir / info["file_name"]
            if not file.is_file():
                raise DataError(f"{file}: missing image (listed in {ann_file})")
            sizes[info["id"]] = (file, (info["width"], info["height"]))
        seen: dict[int, None] = {}
        for index, category in enumerate(doc["categories"]):
            _coco_fields(category, COCO_CATEGORY_FIELDS, ann_file, "category", index)
            seen[_coco_unique(category["id"], seen, ann_file, "category")] = None
        categories = sorted(seen)
        degenerate, no_mask, ann_ids = 0, 0, {}
        for index, ann in enumerate(doc["annotations"]):
            _coco_fields(ann, COCO_ANNOTATION_FIELDS, ann_file, "annotation", index)
            ann_ids[_coco_unique(ann["id"], ann_ids, ann_file, "annotation")] = None
            if ann["image_id"] not in sizes:
                raise DataError(f"{ann_file}: annotation {ann['id']} refers to unknown image id {ann['image_id']}")
            if ann["category_id"] not in categories:
                raise DataError(f"{ann_file}: annotation {ann['id']} has unknown category id {ann['category_id']}")
            degenerate += _coco_box(ann, sizes[ann["image_id"]][1], ann_file)
            no_mask += _coco_segmentation(ann, sizes[ann["image_id"]][1], ann_file)
        checked = _sample(sorted(sizes.values()), decoding.deep)
        decoding.run(_coco_image, [(file, size, ann_file) for file, size in checked], image_dir)
        splits[split] = {"images": len(sizes), "annotations": len(doc["annotations"]), "categories": categories,
                         "crowd": sum(bool(a.get("iscrowd")) for a in doc["annotations"]),
                         "degenerate_boxes": degenerate, "degenerate_masks": no_mask, "checked": len(checked)}
    return _totals(splits, path)


def _coco_image(file: Path, size: tuple[int, int], ann_file: Path) -> None:
    decoded = _decode(file).size
    if decoded != size:
        raise DataError(f"{file}: size {decoded}, but {ann_file} says {size}")


# What the COCO loaders (pycocotools, mmdet's CocoDataset) read from each entry: its JSON type, and in words.
COCO_IMAGE_FIELDS = {"id": (int, "an integer"), "file_name": (str, "a file name"),
                     "width": (int, "an integer >= 1"), "height": (int, "an integer >= 1")}
# mmdet reads area (it drops boxes of area <= 0) and the masks (with_mask: Mask R-CNN); COCOeval reads
# area and iscrowd of every ground-truth annotation
COCO_ANNOTATION_FIELDS = {"id": (int, "an integer"), "image_id": (int, "an integer"),
                          "category_id": (int, "an integer"), "bbox": (list, "[x, y, width, height]"),
                          "area": ((int, float), "a number"), "iscrowd": (int, "0 or 1"),
                          "segmentation": ((list, dict), "polygons [[x1, y1, x2, y2, ...], ...] or an RLE "
                                                         "{counts, size}")}
COCO_CATEGORY_FIELDS = {"id": (int, "an integer"), "name": (str, "a category name")}
COCO_LISTS = {"image": "images", "annotation": "annotations", "category": "categories"}  # entry -> its list
BOX_SLACK = 1.0  # px a box may pass the image border by (boxes from float polygon coordinates)


def _coco_fields(entry: object, fields: dict[str, tuple[type, str]], ann_file: Path, label: str, index: int) -> None:
    """Every field present with its JSON type; the entry is named by its id when it has one."""
    if not isinstance(entry, dict):
        raise DataError(f"{ann_file}: {COCO_LISTS[label]}[{index}] is not an object")
    name = f"{label} {entry['id']}" if isinstance(entry.get("id"), int) else f"{COCO_LISTS[label]}[{index}]"
    for field, (kind, expected) in fields.items():
        value = entry.get(field)
        if not isinstance(value, kind) or isinstance(value, bool) or value == "" or \
                (field in ("width", "height") and value < 1) or (field == "iscrowd" and value not in (0, 1)):
            found = "missing" if field not in entry else repr(value)
            raise DataError(f"{ann_file}: {name}: field {field!r} is {found} (expected {expected})")


def _coco_unique(entry_id: int, seen: dict, ann_file: Path, label: str) -> int:
    """``entry_id``, refused if an earlier entry had it: pycocotools' index keeps only the last entry of
    an id (an image's annotations would join another image), and mmdet refuses repeated annotation ids."""
    if entry_id in seen:
        raise DataError(f"{ann_file}: {label} id {entry_id} is listed twice (expected unique {label} ids)")
    return entry_id


def _coco_segmentation(ann: dict, size: tuple[int, int], ann_file: Path) -> int:
    """Refuse a mask pycocotools cannot read (polygons of other than an even count of finite numbers, an
    RLE not of the image's [height, width]); return 1 for a mask with no polygon of 3 or more points,
    which mmdet's LoadAnnotations ignores (the instance is flagged and skipped, as upstream) and which
    real annotation files may hold, 0 otherwise."""
    segm, (width, height) = ann["segmentation"], size
    where = f"{ann_file}: annotation {ann['id']} (image {ann['image_id']}): field 'segmentation'"
    if isinstance(segm, dict):
        counts = segm.get("counts")
        if not isinstance(counts, (list, str)) or not counts:
            raise DataError(f"{where}: RLE counts is {counts!r} (expected a list of run lengths or a compressed string)")
        if segm.get("size") != [height, width]:
            raise DataError(f"{where}: RLE size is {segm.get('size')!r}, but the image is [{height}, {width}] "
                            "(expected [height, width])")
        return 0
    for polygon in segm:
        if not isinstance(polygon, list) or len(polygon) % 2 or \
                not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in polygon):
            shown = repr(polygon) if len(repr(polygon)) <= 60 else repr(polygon)[:57] + "..."
            raise DataError(f"{where}: polygon {shown} (expected [x1, y1, x2, y2, ...]: an even count of finite "
                            "numbers)")
    return int(not any(len(polygon) >= 6 for polygon in segm))


def _coco_box(ann: dict, size: tuple[int, int], ann_file: Path) -> int:
    """Refuse a malformed box or one outside its image; return 1 for a zero-width/-height box.

    Zero-size boxes occur in the official train2017 (two, e.g. annotation 918 of image 200365:
    cocoapi#355); mmdet's CocoDataset drops boxes under 1 px as the upstream recipes do, so they are
    counted, not refused.
    """
    box = ann["bbox"]
    where = f"{ann_file}: annotation {ann['id']} (image {ann['image_id']}): field 'bbox'"
    if len(box) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
                                for v in box):
        raise DataError(f"{where} is {box!r} (expected [x, y, width, height], 4 finite numbers)")
    x, y, w, h = box
    if w < 0 or h < 0:
        raise DataError(f"{where} is {box!r}: negative width or height")
    width, height = size
    if x < -BOX_SLACK or y < -BOX_SLACK or x + w > width + BOX_SLACK or y + h > height + BOX_SLACK:
        raise DataError(f"{where} is {box!r}: outside the {width} x {height} image")
    return int(w == 0 or h == 0)
