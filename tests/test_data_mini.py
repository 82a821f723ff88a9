"""The mini sets in the real layouts (`vitpe data synth --layout real`, smoke scale): determinism, real class
ids and sizes, every layout read by its real loader, and `vitpe data check` at the smoke scale."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import ROOT, run
from vitpe.cli import main
from vitpe.config import load_params
from vitpe.data import synth_real
from vitpe.data.synth import ADE_LABEL_IDS
from vitpe.data.subsets import ALL_CORRUPTIONS, SEVERITIES, class_index_mask
from vitpe.errors import ConfigError
from vitpe.data.hendrycks_lists import OFFICIAL_INDICES, official_wnids


def _params(root: Path) -> dict:
    """params.yaml at the smoke scale with the mini set under ``root``."""
    params = load_params(ROOT / "params.yaml", ["scale=smoke", f"data={{mini: {{root: '{root}'}}}}"])
    assert params["data"]["mini"]["root"] == str(root)
    return params


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """(params, root) of the mini set of params.yaml, generated once for the module."""
    root = tmp_path_factory.mktemp("mini") / "data"
    params = _params(root)
    synth_real.synthesize_real(params, root, log=lambda msg: None)
    return params, root


def _manifest(root: Path) -> dict[str, str]:
    return {entry["path"]: entry["sha256"] for entry in json.loads((root / "manifest.json").read_text())["files"]}


def test_the_cli_regenerates_the_same_bytes(mini, tmp_path, capsys):
    _, root = mini
    params_file = tmp_path / "params.yaml"
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["mini"]["root"] = str(tmp_path / "again")
    params_file.write_text(yaml.safe_dump(raw))
    assert main(["data", "synth", "--params", str(params_file), "--layout", "real"]) == 0
    assert "synth: done" in capsys.readouterr().out
    first, second = _manifest(root), _manifest(tmp_path / "again")
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(first) == on_disk
    assert first == second  # same paths, same sha256 for every file


def test_imagenet_uses_real_wnids_and_varied_jpegs_of_at_least_224_px(mini):
    from torchvision.datasets import ImageFolder

    params, root = mini
    cfg = params["data"]["mini"]
    train = ImageFolder(str(root / "imagenet" / "train"))
    val = ImageFolder(str(root / "imagenet" / "val"))
    in_a, in_o = set(official_wnids("imagenet_a")), set(official_wnids("imagenet_o"))
    assert len(train.classes) == cfg["num_classes"] and val.classes == train.classes
    assert all(wnid in in_a and wnid in in_o for wnid in train.classes)  # real ImageNet-1k classes
    assert train.classes == synth_real.mini_wnids(cfg["num_classes"])
    assert len(train) == cfg["num_classes"] * cfg["train_per_class"]
    assert np.bincount(val.targets).tolist() == [cfg["val_per_class"]] * cfg["num_classes"]
    assert all(Path(path).suffix == ".JPEG" for path, _ in train.samples + val.samples)
    jpegs = [p for p in root.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg")]
    assert len(jpegs) == (cfg["num_classes"] * (cfg["train_per_class"] + cfg["val_per_class"])
                          + 19 * 5 * cfg["num_classes"] * cfg["corruption_per_class"]
                          + cfg["a_classes"] * cfg["a_per_class"] + cfg["o_classes"] * cfg["o_per_class"]
                          + cfg["seg_train"] + cfg["seg_val"] + cfg["det_train"] + cfg["det_val"])
    for path in jpegs:
        with Image.open(path) as image:
            assert image.format == "JPEG" and min(image.size) >= 224, path
    low, high = cfg["image_sides"]
    sizes = set()
    for folder in ("imagenet/train", "imagenet/val", "imagenet-a", "imagenet-o"):
        for path in (root / folder).rglob("*.*"):
            with Image.open(path) as image:
                sizes.add(image.size)
    assert all(low <= side <= high for size in sizes for side in size)
    assert len({w / h for w, h in sizes}) > 10  # random aspect ratios, not one shape
    img, label = train[len(train) - 1]
    assert img.mode == "RGB" and label == cfg["num_classes"] - 1


def test_imagenet_c_every_corruption_and_severity_at_224(mini):
    params, root = mini
    cfg = params["data"]["mini"]
    c_root = root / "imagenet-c"
    wnids = sorted(p.name for p in (root / "imagenet" / "train").iterdir())
    assert sorted(p.name for p in c_root.iterdir()) == sorted(ALL_CORRUPTIONS)
    folders = [c_root / c / str(s) for c in ALL_CORRUPTIONS for s in SEVERITIES]
    assert len(folders) == 19 * 5 and all(folder.is_dir() for folder in folders)
    val = root / "imagenet" / "val"
    expected = sorted(f"{w}/{name.name}" for w in wnids for name in sorted((val / w).iterdir())[: cfg["corruption_per_class"]])
    for folder in folders:
        assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.JPEG")) == expected, folder
    with Image.open(c_root / "gaussian_noise" / "3" / expected[0]) as image:
        assert image.size == (224, 224) and image.format == "JPEG"


def test_imagenet_a_and_o_are_real_subsets_of_the_training_classes(mini):
    from torchvision.datasets import ImageFolder

    params, root = mini
    cfg = params["data"]["mini"]
    train = ImageFolder(str(root / "imagenet" / "train"))
    doc = json.loads((root / "layouts.json").read_text())
    for name, kind, count, per_class in (("imagenet-a", "imagenet_a", cfg["a_classes"], cfg["a_per_class"]),
                                         ("imagenet-o", "imagenet_o", cfg["o_classes"], cfg["o_per_class"])):
        subset = ImageFolder(str(root / name))
        assert len(subset.classes) == count and len(subset) == count * per_class
        assert all(Path(path).suffix == ".jpg" for path, _ in subset.samples)
        assert set(subset.classes) <= set(official_wnids(kind))  # each is in the release's 200-class list
        mask = class_index_mask(train.classes, root / name)
        assert [train.classes[i] for i in mask] == subset.classes
    assert doc["imagenet_a_classes"] == ImageFolder(str(root / "imagenet-a")).classes
    # O folders carry training-class wnids but show held-out layouts
    assert not any(doc["imagenet_o_folders"][k] == doc["train_classes"][k] for k in doc["imagenet_o_folders"])
    # the classes come from the 59 that the two official lists share
    assert len(set(OFFICIAL_INDICES["imagenet_a"]) & set(OFFICIAL_INDICES["imagenet_o"])) == 59


def test_ade20k_in_the_challenge_layout(mini):
    params, root = mini
    cfg = params["data"]["mini"]
    ade = root / "ade20k"
    low, high = cfg["seg_sides"]
    allowed = {0, *ADE_LABEL_IDS.values()}
    shapes = set()
    for split, prefix, count in (("training", "ADE_train", cfg["seg_train"]), ("validation", "ADE_val", cfg["seg_val"])):
        images = sorted((ade / "images" / split).glob("*.jpg"))
        assert [p.name for p in images] == [f"{prefix}_{i:08d}.jpg" for i in range(1, count + 1)]
        for path in images:
            with Image.open(path) as image, Image.open(ade / "annotations" / split / f"{path.stem}.png") as label:
                assert label.mode == "L" and label.size == image.size
                assert all(low <= side <= high for side in image.size)
                shapes.add(image.size)
                assert set(np.unique(np.asarray(label)).tolist()) <= allowed
    assert len(shapes) > 1


def test_coco_with_real_categories_polygons_and_a_crowd(mini):
    from pycocotools.coco import COCO

    params, root = mini
    cfg = params["data"]["mini"]
    low, high = cfg["det_sides"]
    used = set()
    for split, count in (("train2017", cfg["det_train"]), ("val2017", cfg["det_val"])):
        coco = COCO(str(root / "coco" / "annotations" / f"instances_{split}.json"))
        categories = coco.loadCats(coco.getCatIds())
        assert len(categories) == 80 and categories[0] == {"id": 1, "name": "person", "supercategory": "person"}
        assert [c["id"] for c in categories][-1] == 90  # COCO's ids have gaps (80 classes, ids 1..90)
        assert len(coco.getImgIds()) == count
        crowds = 0
        for image_id in coco.getImgIds():
            info = coco.loadImgs(image_id)[0]
            with Image.open(root / "coco" / split / info["file_name"]) as image:
                assert image.size == (info["width"], info["height"])
            assert low <= info["width"] <= high and low <= info["height"] <= high
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None)):
                mask = coco.annToMask(ann)
                assert mask.shape == (info["height"], info["width"]) and ann["area"] == mask.sum() > 0
                ys, xs = np.nonzero(mask)
                x, y, w, h = ann["bbox"]
                assert abs(xs.min() - x) <= 1 and abs(ys.max() + 1 - (y + h)) <= 1
                if ann["iscrowd"]:
                    crowds += 1
                    assert isinstance(ann["segmentation"]["counts"], list)
                else:
                    assert isinstance(ann["segmentation"], list) and len(ann["segmentation"][0]) >= 6
                used.add(coco.loadCats(ann["category_id"])[0]["name"])
        assert crowds >= 1
    assert used <= {"sports ball", "book", "kite"} and len(used) >= 2


def test_vitpe_data_check_passes_at_the_smoke_scale(mini, tmp_path, capsys):
    params, root = mini
    cfg = params["data"]["mini"]
    params_file = tmp_path / "params.yaml"
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["mini"]["root"] = str(root)
    params_file.write_text(yaml.safe_dump(raw))
    rc = main(["data", "check", "--params", str(params_file), "--set", "scale=smoke", "--full",
               "--out", str(tmp_path / "report.json")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["scale"] == "smoke" and report["data"] == "mini"
    assert set(report["datasets"]) == {"imagenet", "imagenet_c", "imagenet_a", "imagenet_o", "ade20k", "coco"}
    assert report["datasets"]["imagenet"]["train"]["classes"] == cfg["num_classes"]
    assert report["datasets"]["imagenet_c"]["images"] == 19 * 5 * cfg["num_classes"] * cfg["corruption_per_class"]
    assert report["datasets"]["imagenet_c"]["extras"] == ["speckle_noise", "gaussian_blur", "spatter", "saturate"]
    assert len(report["datasets"]["imagenet_a"]["class_index_mask"]) == cfg["a_classes"]
    assert report["datasets"]["coco"]["val2017"]["categories"][-1] == 90
    assert report["datasets"]["ade20k"]["num_classes"] == 150
    assert out.count("check: ") == 6


def test_config_errors_name_the_key_and_leave_the_folder_alone(mini, tmp_path):
    params, _ = mini
    (tmp_path / "manifest.json").write_text("{}")  # an earlier, complete run
    for key, value, expected in (("a_classes", 11, "data.mini.a_classes is 11"),
                                 ("num_classes", 60, "data.mini.num_classes is 60"),
                                 ("seg_sides", [640, 384], "data.mini.seg_sides")):
        bad = json.loads(json.dumps(params))
        bad["data"]["mini"][key] = value
        with pytest.raises(ConfigError, match=expected):
            synth_real.synthesize_real(bad, tmp_path, log=lambda msg: None)
    assert (tmp_path / "manifest.json").read_text() == "{}"


@pytest.mark.mm
def test_mmseg_and_mmdet_read_the_mini_sets_with_their_default_classes(mini):
    """No metainfo override: the mini sets use ADE20K-150's ids and COCO's 80 categories as they are."""
    from mmcv.transforms import LoadImageFromFile
    from mmdet.datasets import CocoDataset
    from mmdet.datasets.transforms import LoadAnnotations as LoadInstances
    from mmseg.datasets import ADE20KDataset
    from mmseg.datasets.transforms import LoadAnnotations as LoadSegMap

    params, root = mini
    cfg = params["data"]["mini"]
    ade = ADE20KDataset(data_root=str(root / "ade20k"),
                        data_prefix=dict(img_path="images/validation", seg_map_path="annotations/validation"),
                        pipeline=[LoadImageFromFile(), LoadSegMap()], serialize_data=False)
    assert len(ade) == cfg["seg_val"] and len(ade.metainfo["classes"]) == 150 and ade.reduce_zero_label
    assert all(ade.metainfo["classes"][i - 1].strip() == name for name, i in ADE_LABEL_IDS.items())
    for i in range(len(ade)):
        sample = ade[i]
        raw = np.asarray(Image.open(sample["seg_map_path"])).astype(int)
        assert sample["img"].shape[:2] == sample["gt_seg_map"].shape == raw.shape
        assert np.array_equal(sample["gt_seg_map"], np.where(raw == 0, 255, raw - 1))  # 0 = other: ignored

    for split, count in (("train2017", cfg["det_train"]), ("val2017", cfg["det_val"])):
        doc = json.loads((root / "coco" / "annotations" / f"instances_{split}.json").read_text())
        coco = CocoDataset(data_root=str(root / "coco"), ann_file=f"annotations/instances_{split}.json",
                           data_prefix=dict(img=f"{split}/"), filter_cfg=dict(filter_empty_gt=False),
                           pipeline=[LoadImageFromFile(), LoadInstances(with_bbox=True, with_mask=True)],
                           serialize_data=False)
        classes = coco.metainfo["classes"]
        assert list(classes) == [c["name"] for c in synth_real.COCO_2017_CATEGORIES]
        names = {c["id"]: c["name"] for c in doc["categories"]}
        instances = [inst for i in range(count) for inst in coco.get_data_info(i)["instances"]]
        assert sorted(inst["bbox_label"] for inst in instances) == sorted(
            classes.index(names[a["category_id"]]) for a in doc["annotations"])
        sample = coco[0]
        assert sample["gt_masks"].to_ndarray().shape[1:] == sample["img"].shape[:2]


@pytest.mark.parametrize("scale, synth", [
    ("tiny", "vitpe data synth --params params.yaml --set 'scale=\"tiny\"' --layout embedded"),
    ("smoke", "vitpe data synth --params params.yaml --set 'scale=\"smoke\"' --layout real"),
    ("paper", None),
])
def test_the_data_check_waits_for_the_scales_generated_set(tmp_path, scale, synth):
    """rule synth_data makes the active scale's generated set (embedded at tiny, mini at smoke, none at paper)."""
    shutil.copytree(ROOT / "workflow", tmp_path / "workflow")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "Snakefile").write_text('configfile: "params.yaml"\n\n\ninclude: "workflow/rules/common.smk"\n'
                                        'include: "workflow/rules/data.smk"\n')
    dry = run(["snakemake", "-n", "-p", "--cores", "1", "--config", f"scale={scale}", "--",
               f"results/checks/{scale}/data.json"], tmp_path).stdout
    root = {"tiny": "data/embedded", "smoke": "data/mini"}.get(scale)
    if synth is None:
        assert "synth_data" not in dry and "check_data" in dry
    else:
        assert f"output: {root}/manifest.json" in dry and f"{synth} > results/logs/data/synth_" in dry
    assert f"vitpe data check --params params.yaml --set 'scale=\"{scale}\"' --out results/checks/{scale}/data.json" in dry
