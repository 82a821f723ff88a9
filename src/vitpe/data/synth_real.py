"""The mini datasets: every set the study reads, in the REAL layouts, small enough for 2 CPU cores.

``synthesize_real(params, root)`` (``vitpe data synth --layout real``, the smoke scale) writes under
``root`` what ``data.real`` points at in a real run, at the real image sizes, with real class ids::

    imagenet/{train,val}/<wnid>/*.JPEG           ImageFolder; real ImageNet-1k wnids, varied sizes >= 224 px
    imagenet-c/<corruption>/<severity>/<wnid>/*.JPEG   19 corruptions x 5 severities of 224-px val crops
    imagenet-a/<wnid>/*.jpg                      hard renderings of some training classes
    imagenet-o/<wnid>/*.jpg                      held-out layouts filed under training-class wnids (OOD)
    ade20k/{images,annotations}/{training,validation}/   ADEChallengeData2016: ADE20K-150 ids, 0 = other
    coco/{train2017,val2017}/*.jpg, coco/annotations/instances_*.json   COCO's 80 categories and ids
    layouts.json                                 which layout each wnid shows
    manifest.json                                written last: the completion marker, with file hashes

The content is the embedded generator's (``vitpe.data.synth``): classes are spatial layouts of the
same parts on scikit-image photographs, here at ImageNet's sizes. The classes are the first
``num_classes`` ImageNet-1k wnids that are in both the ImageNet-A and the ImageNet-O 200-class lists,
so the A and O subsets are real subsets of the training classes and their masks are real indices.
"""
from __future__ import annotations

from pathlib import Path

from vitpe.data.synth import (JPEG_QUALITY, ClassMakers, CocoLabels, Layout, Log, _layouts, _render_layout, _rng,
                              _save, clear_root, draw_shape, make_ade20k, make_coco, write_sets)
from vitpe.errors import ConfigError

IMAGENET_C_SIZE = 224  # ImageNet-C: Resize(256) + CenterCrop(224) of the validation image
# COCO 2017's 80 categories, supercategory -> (id, name), as in instances_{train,val}2017.json
COCO_2017 = {
    "person": ((1, "person"),),
    "vehicle": ((2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"), (7, "train"),
                (8, "truck"), (9, "boat")),
    "outdoor": ((10, "traffic light"), (11, "fire hydrant"), (13, "stop sign"), (14, "parking meter"), (15, "bench")),
    "animal": ((16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"), (21, "cow"), (22, "elephant"),
               (23, "bear"), (24, "zebra"), (25, "giraffe")),
    "accessory": ((27, "backpack"), (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase")),
    "sports": ((34, "frisbee"), (35, "skis"), (36, "snowboard"), (37, "sports ball"), (38, "kite"),
               (39, "baseball bat"), (40, "baseball glove"), (41, "skateboard"), (42, "surfboard"),
               (43, "tennis racket")),
    "kitchen": ((44, "bottle"), (46, "wine glass"), (47, "cup"), (48, "fork"), (49, "knife"), (50, "spoon"),
                (51, "bowl")),
    "food": ((52, "banana"), (53, "apple"), (54, "sandwich"), (55, "orange"), (56, "broccoli"), (57, "carrot"),
             (58, "hot dog"), (59, "pizza"), (60, "donut"), (61, "cake")),
    "furniture": ((62, "chair"), (63, "couch"), (64, "potted plant"), (65, "bed"), (67, "dining table"),
                  (70, "toilet")),
    "electronic": ((72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"), (77, "cell phone")),
    "appliance": ((78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"), (82, "refrigerator")),
    "indoor": ((84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"), (89, "hair drier"),
               (90, "toothbrush")),
}
COCO_2017_CATEGORIES = sorted(({"id": i, "name": name, "supercategory": group}
                               for group, members in COCO_2017.items() for i, name in members), key=lambda c: c["id"])
# the COCO category each shape stands for (a round ball, a square book, a triangular kite)
MINI_COCO = CocoLabels(COCO_2017_CATEGORIES, {"disk": 37, "square": 84, "triangle": 38},
                       "vitpe mini COCO instances (shapes on photographs, COCO 2017 categories)")


def synthesize_real(params: dict, root: str | Path, log: Log = print, workers: int | None = None) -> Path:
    """Generate every mini set (``params["data"]["mini"]``) under ``root``; return ``root``.

    As ``vitpe.data.synth.synthesize``: deterministic for ``data.mini.seed``, ``root`` cleared first,
    manifest.json written last, ``workers`` processes (default: one per available core).
    """
    cfg = params["data"]["mini"]
    _validate(cfg)
    wnids = mini_wnids(cfg["num_classes"])
    grid, layouts = _layouts(cfg["num_classes"] + cfg["o_classes"], cfg["seed"], section="data.mini")
    root = Path(root)
    clear_root(root, "data.mini")
    downstream = [(make_ade20k, (root / "ade20k", cfg, tuple(cfg["seg_sides"]))),
                  (make_coco, (root / "coco", cfg, tuple(cfg["det_sides"]), MINI_COCO))]
    c_cfg = {"seed": cfg["seed"], "image_size": IMAGENET_C_SIZE, "corruption_per_class": cfg["corruption_per_class"]}
    write_sets(root, cfg, wnids, grid, layouts, MINI_MAKERS, downstream, c_cfg, log, workers)
    return root


def _validate(cfg: dict) -> None:
    """Cross-field checks the schema cannot express; each names the key."""
    for key, limit, what in (("a_classes", cfg["num_classes"], "num_classes"),
                             ("o_classes", cfg["num_classes"], "num_classes (ImageNet-O folders are training classes)"),
                             ("corruption_per_class", cfg["val_per_class"], "val_per_class")):
        if cfg[key] > limit:
            raise ConfigError(f"params: data.mini.{key} is {cfg[key]}, expected at most {limit} ({what})")
    for key in ("image_sides", "seg_sides", "det_sides"):
        low, high = cfg[key]
        if low > high:
            raise ConfigError(f"params: data.mini.{key} is {cfg[key]}, expected [smallest, largest] side")


def mini_wnids(num_classes: int) -> list[str]:
    """The first ``num_classes`` ImageNet-1k wnids (sorted) that are in both the ImageNet-A and the
    ImageNet-O 200-class lists."""
    from vitpe.data.hendrycks_lists import official_wnids

    in_o = set(official_wnids("imagenet_o"))
    shared = [wnid for wnid in official_wnids("imagenet_a") if wnid in in_o]
    if num_classes > len(shared):
        raise ConfigError(f"params: data.mini.num_classes is {num_classes}, expected at most {len(shared)} "
                          "(ImageNet-1k classes in both the ImageNet-A and the ImageNet-O lists)")
    return shared[:num_classes]


def _render(cfg: dict, key: str, index: int, layout: Layout, grid: int, hard: bool = False):
    """Image ``index`` of stream ``key``: a layout at a (height, width) drawn from ``image_sides``."""
    shape = draw_shape(cfg["seed"], f"{key}/shape", index, cfg["image_sides"])
    return _render_layout(_rng(cfg["seed"], key, index), layout, grid, shape, hard=hard)


def make_imagenet_class(out: Path, cfg: dict, split: str, per_class: int, index: int, wnid: str, layout: Layout,
                        grid: int) -> None:
    """imagenet/<split>/<wnid>/*.JPEG, named like ImageNet's files (train: <wnid>_<n>; val: one running
    ILSVRC2012_val_<n> over all classes)."""
    for j in range(per_class):
        image = _render(cfg, f"imagenet/{split}/{index}", j, layout, grid)
        name = f"{wnid}_{j + 1}" if split == "train" else f"ILSVRC2012_val_{index * per_class + j + 1:08d}"
        _save(image, out / wnid / f"{name}.JPEG", quality=JPEG_QUALITY)


def make_imagenet_a(out: Path, cfg: dict, layouts: dict[str, Layout], wnids: list[str], grid: int) -> str:
    """imagenet-a/<wnid>/*.jpg: hard renderings of some training classes."""
    for wnid, layout in layouts.items():
        index = wnids.index(wnid)
        for j in range(cfg["a_per_class"]):
            _save(_render(cfg, f"imagenet-a/{index}", j, layout, grid, hard=True), out / wnid / f"a_{j:05d}.jpg",
                  quality=JPEG_QUALITY)
    return f"synth: imagenet-a: {len(layouts) * cfg['a_per_class']} images, {len(layouts)} classes"


def make_imagenet_o(out: Path, cfg: dict, folders: dict[str, Layout], grid: int) -> str:
    """imagenet-o/<wnid>/*.jpg: layouts never trained on, filed under the training class they would be
    mistaken for (as in ImageNet-O)."""
    for k, (wnid, layout) in enumerate(folders.items()):
        for j in range(cfg["o_per_class"]):
            _save(_render(cfg, f"imagenet-o/{k}", j, layout, grid), out / wnid / f"o_{j:05d}.jpg", quality=JPEG_QUALITY)
    return f"synth: imagenet-o: {len(folders) * cfg['o_per_class']} images, {len(folders)} held-out layouts"


MINI_MAKERS: ClassMakers = (make_imagenet_class, make_imagenet_a, make_imagenet_o)
