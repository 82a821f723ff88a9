"""The embedded generator: determinism, the completion marker, and every layout read by its real loader."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitpe.data import synth
from vitpe.data.subsets import ALL_CORRUPTIONS, SEVERITIES, class_index_mask
from vitpe.errors import ConfigError, DataError


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_runs_are_byte_identical_and_the_manifest_lists_every_file(embedded, tmp_path):
    params, root = embedded
    again = synth.synthesize(params, tmp_path / "again", log=lambda msg: None)
    first, second = _files(root), _files(again)
    assert first.keys() == second.keys()
    different = [name for name in first if first[name] != second[name]]
    assert different == []
    manifest = json.loads(first["manifest.json"])
    listed = {entry["path"]: entry["sha256"] for entry in manifest["files"]}
    assert set(listed) == set(first) - {"manifest.json"}
    assert all(hashlib.sha256(first[name]).hexdigest() == digest for name, digest in listed.items())
    assert manifest["versions"]["imagecorruptions-imaug"] == "1.1.5"
    assert manifest["params"]["seed"] == params["data"]["embedded"]["seed"] and "root" not in manifest["params"]


def test_a_failed_run_leaves_no_manifest(embedded, tmp_path, monkeypatch):
    params, _ = embedded
    (tmp_path / "manifest.json").write_text("{}")  # from an earlier, complete run
    (tmp_path / "imagenet" / "train" / "stale_class").mkdir(parents=True)

    def fail(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(synth, "make_imagenet_c", fail)
    with pytest.raises(RuntimeError, match="interrupted"):
        synth.synthesize(params, tmp_path, log=lambda msg: None)
    assert not (tmp_path / "manifest.json").exists()
    assert not (tmp_path / "imagenet" / "train" / "stale_class").exists()


def test_a_different_seed_gives_different_images(embedded):
    params, root = embedded
    cfg = params["data"]["embedded"]
    first = sorted((root / "imagenet" / "train").rglob("*.png"))[0]  # class 0, image 0
    grid, layouts = synth._layouts(cfg["num_classes"] + cfg["o_classes"], cfg["seed"])
    img0 = synth._render_layout(synth._rng(cfg["seed"], "imagenet/train/0", 0), layouts[0], grid, cfg["image_size"])
    img1 = synth._render_layout(synth._rng(cfg["seed"] + 1, "imagenet/train/0", 0), layouts[0], grid, cfg["image_size"])
    assert np.array_equal(np.asarray(Image.open(first)), img0)
    assert np.abs(img0.astype(int) - img1.astype(int)).mean() > 10


def test_config_errors_name_the_key(embedded, tmp_path):
    params, _ = embedded
    params = json.loads(json.dumps(params))
    params["data"]["embedded"]["o_classes"] = params["data"]["embedded"]["num_classes"] + 1
    with pytest.raises(ConfigError, match="data.embedded.o_classes"):
        synth.synthesize(params, tmp_path)


def test_imagefolder_train_and_val(embedded):
    from torchvision.datasets import ImageFolder

    params, root = embedded
    cfg = params["data"]["embedded"]
    train = ImageFolder(str(root / "imagenet" / "train"))
    val = ImageFolder(str(root / "imagenet" / "val"))
    assert len(train.classes) == cfg["num_classes"] and val.classes == train.classes
    assert [train.class_to_idx[name] for name in train.classes] == list(range(cfg["num_classes"]))
    assert all(name.startswith(f"c{i:02d}_") for i, name in enumerate(train.classes))
    assert len(train) == cfg["num_classes"] * cfg["train_per_class"]
    assert np.bincount(val.targets).tolist() == [cfg["val_per_class"]] * cfg["num_classes"]
    img, label = train[len(train) - 1]
    assert img.size == (cfg["image_size"],) * 2 and img.mode == "RGB" and label == cfg["num_classes"] - 1


def test_classes_are_layouts_of_the_same_parts_and_flip_safe(embedded):
    params, root = embedded
    doc = json.loads((root / "layouts.json").read_text())
    grid = doc["grid"]
    key = lambda layout: tuple(tuple(layout[p]) for p in doc["parts"])  # noqa: E731
    mirror = lambda layout: {p: [r, grid - 1 - c] for p, (r, c) in layout.items()}  # noqa: E731
    train = [key(v) for v in doc["train_classes"].values()]
    held_out = [key(v) for v in doc["imagenet_o_folders"].values()]
    every = train + held_out
    cfg = params["data"]["embedded"]
    assert len(set(every)) == len(every) == cfg["num_classes"] + cfg["o_classes"]
    # no class is the horizontal mirror of another, so hflip augmentation keeps labels right
    mirrors = {key(mirror(v)) for v in [*doc["train_classes"].values(), *doc["imagenet_o_folders"].values()]}
    assert mirrors.isdisjoint(every)


def test_imagenet_c_layout_and_protocol(embedded):
    params, root = embedded
    cfg = params["data"]["embedded"]
    c_root = root / "imagenet-c"
    assert sorted(p.name for p in c_root.iterdir()) == sorted(ALL_CORRUPTIONS)
    val_root = root / "imagenet" / "val"
    expected = sorted(
        f"{cls.name}/{Path(f.name).with_suffix('.JPEG')}"
        for cls in val_root.iterdir() for f in sorted(cls.iterdir())[: cfg["corruption_per_class"]]
    )
    for corruption in ALL_CORRUPTIONS:
        assert sorted(p.name for p in (c_root / corruption).iterdir()) == [str(s) for s in SEVERITIES]
        for severity in SEVERITIES:
            files = sorted(p.relative_to(c_root / corruption / str(severity)).as_posix()
                           for p in (c_root / corruption / str(severity)).rglob("*") if p.is_file())
            assert files == expected, (corruption, severity)
    # Resize(36) + CenterCrop(32) of the clean image, then noise that grows with the severity
    first = expected[0]
    clean = synth._resize_center_crop(Image.open(val_root / Path(first).with_suffix(".png")), cfg["image_size"])
    errors = []
    for severity in SEVERITIES:
        with Image.open(c_root / "gaussian_noise" / str(severity) / first) as img:
            assert img.format == "JPEG" and img.size == (cfg["image_size"],) * 2
            errors.append(np.abs(np.asarray(img, dtype=float) - clean).mean())
    assert errors[0] < errors[2] < errors[4] and errors[4] > 2 * errors[0]
    with Image.open(c_root / "brightness" / "5" / first) as img:
        assert np.asarray(img, dtype=float).mean() > clean.mean() + 10


def test_imagenet_a_and_o_class_index_masks(embedded, tmp_path):
    from torchvision.datasets import ImageFolder

    params, root = embedded
    cfg = params["data"]["embedded"]
    train = ImageFolder(str(root / "imagenet" / "train"))
    doc = json.loads((root / "layouts.json").read_text())
    for name, count, per_class in (("imagenet-a", cfg["a_classes"], cfg["a_per_class"]),
                                   ("imagenet-o", cfg["o_classes"], cfg["o_per_class"])):
        subset = ImageFolder(str(root / name))
        mask = class_index_mask(train.classes, root / name)
        assert len(mask) == count and mask == sorted(mask) and len(subset) == count * per_class
        assert [train.classes[i] for i in mask] == subset.classes  # logits[:, mask] line up with targets
        assert mask == class_index_mask(root / "imagenet" / "train", root / name)  # from the folder, too
    assert doc["imagenet_a_classes"] == ImageFolder(str(root / "imagenet-a")).classes
    # O folders carry training-class names but show held-out layouts
    assert set(doc["imagenet_o_folders"]) == set(ImageFolder(str(root / "imagenet-o")).classes)
    assert not any(doc["imagenet_o_folders"][k] == doc["train_classes"][k] for k in doc["imagenet_o_folders"])

    (tmp_path / "sub" / "n99999999").mkdir(parents=True)
    with pytest.raises(DataError, match=r"n99999999: class folder is not a training class"):
        class_index_mask(train.classes, tmp_path / "sub")


def test_coco_instances_read_by_pycocotools(embedded):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    params, root = embedded
    cfg = params["data"]["embedded"]
    crowds = 0
    for split, count in (("train2017", cfg["det_train"]), ("val2017", cfg["det_val"])):
        coco = COCO(str(root / "coco" / "annotations" / f"instances_{split}.json"))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["disk", "square", "triangle"]
        assert len(coco.getImgIds()) == count
        for image_id in coco.getImgIds():
            info = coco.loadImgs(image_id)[0]
            with Image.open(root / "coco" / split / info["file_name"]) as img:
                assert img.size == (info["width"], info["height"]) == (cfg["det_image_size"],) * 2
            union = np.zeros((info["height"], info["width"]), dtype=int)
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None)):
                mask = coco.annToMask(ann)
                ys, xs = np.nonzero(mask)
                x, y, w, h = ann["bbox"]
                assert abs(xs.min() - x) <= 1 and abs(ys.min() - y) <= 1
                assert abs(xs.max() + 1 - (x + w)) <= 1 and abs(ys.max() + 1 - (y + h)) <= 1
                assert ann["area"] == mask.sum() > 0
                if ann["iscrowd"]:
                    crowds += 1
                    assert isinstance(ann["segmentation"]["counts"], list)  # uncompressed RLE, as in COCO
                    rle = mask_utils.frPyObjects(ann["segmentation"], info["height"], info["width"])
                    assert np.array_equal(mask_utils.decode(rle), mask)
                else:
                    assert isinstance(ann["segmentation"], list) and len(ann["segmentation"][0]) >= 6
                union += mask
            assert union.max() <= 1  # instances never overlap, so every mask is fully visible
    assert crowds >= 2


def test_ade20k_label_maps(embedded):
    params, root = embedded
    cfg = params["data"]["embedded"]
    doc = json.loads((root / "ade20k" / "classes.json").read_text())
    allowed = {0, *doc["label_ids"].values()}
    assert doc["classes"] == sorted(doc["label_ids"], key=doc["label_ids"].get)
    seen: set[int] = set()
    splits = (("training", "ADE_train", cfg["seg_train"]), ("validation", "ADE_val", cfg["seg_val"]))
    for split, prefix, count in splits:
        images = sorted((root / "ade20k" / "images" / split).glob("*.jpg"))
        assert [p.name for p in images] == [f"{prefix}_{i:08d}.jpg" for i in range(1, count + 1)]
        for path in images:
            label = Image.open(root / "ade20k" / "annotations" / split / path.with_suffix(".png").name)
            assert label.mode == "L" and label.size == Image.open(path).size == (cfg["seg_image_size"],) * 2
            values = set(np.unique(np.asarray(label)).tolist())
            assert values <= allowed
            seen |= values
    assert len(seen) >= 4  # stuff, things and "other" all occur


def test_attack_photographs(embedded):
    params, root = embedded
    cfg = params["data"]["embedded"]
    files = sorted((root / "attack").rglob("*.png"))
    assert len(files) == cfg["attack_images"]
    assert [p.stem for p in files] == list(synth.ATTACK_PHOTOS[: cfg["attack_images"]])
    train = sorted(p.name for p in (root / "imagenet" / "train").iterdir())
    assert class_index_mask(train, root / "attack") == list(range(cfg["attack_images"]))  # round-robin labels
    for path in files:
        with Image.open(path) as img:
            assert img.size == (cfg["image_size"],) * 2 and img.mode == "RGB"
            assert np.asarray(img).std() > 20  # a photograph, not a flat image
