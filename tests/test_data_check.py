"""`vitpe data check`: passes on the embedded sets; each kind of bad input fails with one line naming the path."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from PIL import Image

from conftest import ROOT
from vitpe.cli import main
from vitpe.data.check import check_all, check_dataset
from vitpe.errors import DataError


def cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["data", "check", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def fails(capsys, *args: str) -> str:
    """Run the check, expect a failure; return its one-line message."""
    rc, _, err = cli(capsys, *args)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture
def params_file(embedded, tmp_path) -> Path:
    params, _ = embedded
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_check_all_passes_and_writes_a_report(embedded, params_file, tmp_path, capsys):
    params, root = embedded
    rc, out, err = cli(capsys, "--params", params_file, "--out", tmp_path / "report.json", "--full")
    assert rc == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["datasets"]) == {"imagenet", "imagenet_c", "imagenet_a", "imagenet_o", "ade20k", "coco", "attack"}
    cfg = params["data"]["embedded"]
    assert report["datasets"]["imagenet"]["train"]["images"] == cfg["num_classes"] * cfg["train_per_class"]
    assert report["datasets"]["imagenet_c"]["images"] == 19 * 5 * cfg["num_classes"] * cfg["corruption_per_class"]
    assert report["datasets"]["imagenet_c"]["checked"] == report["datasets"]["imagenet_c"]["images"]  # --full
    assert len(report["datasets"]["imagenet_a"]["class_index_mask"]) == cfg["a_classes"]
    assert report["datasets"]["coco"]["val2017"]["categories"] == [1, 2, 3]
    assert out.count("check: ") == 7


def test_only_the_named_datasets(params_file, tmp_path, capsys):
    rc, out, _ = cli(capsys, "--params", params_file, "--dataset", "coco", "ade20k", "--out", tmp_path / "r.json")
    assert rc == 0
    assert set(json.loads((tmp_path / "r.json").read_text())["datasets"]) == {"coco", "ade20k"}


def test_missing_folder(tmp_path, capsys):
    msg = fails(capsys, "--kind", "imagenet", "--path", tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "train") in msg and "missing folder" in msg


def test_wrong_class_count(embedded, capsys):
    _, root = embedded
    msg = fails(capsys, "--kind", "imagefolder", "--path", root / "imagenet" / "train", "--num-classes", 1000)
    assert str(root / "imagenet" / "train") in msg and "expected 1000" in msg


def test_unreadable_image(embedded, tmp_path, capsys):
    _, root = embedded
    shutil.copytree(root / "imagenet" / "val", tmp_path / "val")
    bad = sorted((tmp_path / "val").rglob("*.png"))[-1]  # the last file of the last class: in the sample
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    msg = fails(capsys, "--kind", "imagefolder", "--path", tmp_path / "val")
    assert str(bad) in msg and "not a readable image" in msg


def test_truncated_jpeg_found_by_a_full_check(embedded, tmp_path, capsys):
    _, root = embedded
    shutil.copytree(root / "imagenet-a", tmp_path / "a")
    files = sorted((tmp_path / "a").rglob("*.jpg"))
    bad = files[1]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) * 2 // 3])  # the header parses; only decoding finds the cut
    msg = fails(capsys, "--kind", "imagenet_a", "--path", tmp_path / "a", "--full")
    assert str(bad) in msg


def test_deep_check_accepts_the_modes_imagenet_holds_and_refuses_clipped_bit_depths(tmp_path, capsys):
    """ImageNet holds CMYK and grayscale JPEGs: they, palette and RGBA images convert to RGB faithfully in the
    training loader and pass. 16-bit and float pixels would be clipped to 0..255 by that conversion (a
    16-bit photo turns white): one line naming the file and its mode."""
    import numpy as np

    from vitpe.data.transforms import eval_transform
    from vitpe.train.data import image_folder

    gradient = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
    rgb = Image.fromarray(np.stack([gradient, gradient.T, 255 - gradient], axis=-1))
    folder = tmp_path / "set" / "n01440764"
    folder.mkdir(parents=True)
    rgb.convert("CMYK").save(folder / "cmyk.JPEG")
    rgb.convert("L").save(folder / "gray.JPEG")
    rgb.convert("P").save(folder / "palette.png")
    rgb.convert("RGBA").save(folder / "rgba.png")
    rc, _, err = cli(capsys, "--kind", "imagefolder", "--path", tmp_path / "set", "--deep")
    assert rc == 0, err
    dataset = image_folder(tmp_path / "set", eval_transform(16, 1.0, output="uint8"))
    assert all(dataset[i][0].shape == (3, 16, 16) for i in range(len(dataset)))
    wide = folder / "wide.png"
    Image.fromarray(gradient.astype(np.uint16) * 257).save(wide)
    msg = fails(capsys, "--kind", "imagefolder", "--path", tmp_path / "set", "--deep", "--out", tmp_path / "r.json")
    assert msg == (f"error: {wide}: I;16 pixels (16/32-bit), which the loader's RGB conversion clips to 8 bits; "
                   "expected an 8-bit image (RGB, grayscale, CMYK or palette)")
    assert not (tmp_path / "r.json").exists()


def test_params_deep_check_makes_the_rule_s_check_decode_everything(embedded, tmp_path, capsys, monkeypatch):
    """data.deep_check: true turns the check the workflow runs (`vitpe data check --params ...`) deep."""
    from vitpe.data import check

    monkeypatch.setattr(check, "SAMPLE", 2)  # a quick check decodes the first and last image of a folder
    params, root = embedded
    copy = shutil.copytree(root, tmp_path / "embedded")
    params["data"]["embedded"]["root"] = str(copy)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    bad = sorted(next((copy / "imagenet" / "train").iterdir()).iterdir())[2]
    bad.write_bytes(bad.read_bytes()[:60])
    argv = ["--params", tmp_path / "params.yaml", "--dataset", "imagenet"]
    rc, out, _ = cli(capsys, *argv)
    assert rc == 0 and "decoded" in out  # the default samples, and this file is not in the sample
    msg = fails(capsys, *argv, "--set", "data.deep_check=true")
    assert msg.startswith(f"error: {bad}: not a readable image")


def test_imagenet_c_missing_severity(embedded, tmp_path, capsys):
    _, root = embedded
    shutil.copytree(root / "imagenet-c", tmp_path / "c")
    shutil.rmtree(tmp_path / "c" / "fog" / "4")
    msg = fails(capsys, "--kind", "imagenet_c", "--path", tmp_path / "c")
    assert str(tmp_path / "c" / "fog" / "4") in msg


def test_imagenet_o_folder_that_is_not_a_training_class(embedded, tmp_path, capsys):
    _, root = embedded
    shutil.copytree(root / "imagenet-o", tmp_path / "o")
    first = sorted((tmp_path / "o").iterdir())[0]
    first.rename(tmp_path / "o" / "n01440764")
    msg = fails(capsys, "--kind", "imagenet_o", "--path", tmp_path / "o",
                "--train-classes", root / "imagenet" / "train")
    assert str(tmp_path / "o" / "n01440764") in msg and "not a training class" in msg


@pytest.mark.parametrize("content, expected", [
    ("{not json", "not valid JSON"),
    (json.dumps({"images": [], "categories": []}), "missing annotations"),
])
def test_bad_coco_json(embedded, tmp_path, capsys, content, expected):
    _, root = embedded
    shutil.copytree(root / "coco", tmp_path / "coco")
    ann = tmp_path / "coco" / "annotations" / "instances_val2017.json"
    ann.write_text(content)
    msg = fails(capsys, "--kind", "coco", "--path", tmp_path / "coco")
    assert str(ann) in msg and expected in msg


def test_coco_json_referencing_a_missing_image(embedded, tmp_path, capsys):
    _, root = embedded
    shutil.copytree(root / "coco", tmp_path / "coco")
    gone = sorted((tmp_path / "coco" / "train2017").iterdir())[-1]
    gone.unlink()
    msg = fails(capsys, "--kind", "coco", "--path", tmp_path / "coco")
    assert str(gone) in msg and "missing image" in msg


def _first_image_and_box(doc: dict) -> tuple[dict, dict]:
    """The first annotation that is not a crowd region, and its image."""
    ann = next(a for a in doc["annotations"] if not a.get("iscrowd"))
    return next(i for i in doc["images"] if i["id"] == ann["image_id"]), ann


@pytest.mark.parametrize("damage, expected", [
    (lambda image, ann: image.pop("width"), "image {image}: field 'width' is missing (expected an integer >= 1)"),
    (lambda image, ann: image.pop("file_name"), "image {image}: field 'file_name' is missing (expected a file name)"),
    (lambda image, ann: image.update(height=0), "image {image}: field 'height' is 0 (expected an integer >= 1)"),
    (lambda image, ann: image.pop("id"), "images[0]: field 'id' is missing"),
    (lambda image, ann: ann.pop("bbox"), "annotation {ann}: field 'bbox' is missing (expected [x, y, width, height])"),
    (lambda image, ann: ann.update(bbox=[1, 2, 3]), "annotation {ann} (image {image}): field 'bbox' is [1, 2, 3]"),
    (lambda image, ann: ann.update(bbox=[1, 2, -3, 4]), "field 'bbox' is [1, 2, -3, 4]: negative width or height"),
    (lambda image, ann: ann.update(bbox=[1, 2, 4, float("nan")]), "(expected [x, y, width, height], 4 finite numbers)"),
    (lambda image, ann: ann.update(bbox=[image["width"] - 2, 0, 10, 5]), "outside the {width} x {height} image"),
    (lambda image, ann: ann.update(bbox=[-5, 0, 3, 3]), "outside the {width} x {height} image"),
])
def test_bad_coco_entries_name_the_id_and_field(embedded, tmp_path, capsys, damage, expected):
    _, root = embedded
    shutil.copytree(root / "coco", tmp_path / "coco")
    ann_file = tmp_path / "coco" / "annotations" / "instances_val2017.json"
    doc = json.loads(ann_file.read_text())
    image, ann = _first_image_and_box(doc)
    doc["images"].remove(image)
    doc["images"].insert(0, image)  # images[0]: named by position when its id is gone
    names = {"image": image["id"], "ann": ann["id"], "width": image["width"], "height": image["height"]}
    damage(image, ann)
    ann_file.write_text(json.dumps(doc))
    msg = fails(capsys, "--kind", "coco", "--path", tmp_path / "coco")
    assert msg.startswith(f"error: {ann_file}: ") and expected.format(**names) in msg


@pytest.mark.parametrize("damage, expected", [
    (lambda doc, image, ann: doc["categories"][0].pop("id"), "categories[0]: field 'id' is missing (expected an integer)"),
    (lambda doc, image, ann: doc["categories"].__setitem__(0, 5), "categories[0] is not an object"),
    (lambda doc, image, ann: doc["categories"].append(dict(doc["categories"][0])),
     "category id {category} is listed twice (expected unique category ids)"),
    (lambda doc, image, ann: doc["images"].append(dict(image, file_name=doc["images"][1]["file_name"])),
     "image id {image} is listed twice (expected unique image ids)"),
    (lambda doc, image, ann: doc["annotations"].append(dict(ann)), "annotation id {ann} is listed twice"),
    (lambda doc, image, ann: ann.pop("area"), "annotation {ann}: field 'area' is missing (expected a number)"),
    (lambda doc, image, ann: ann.update(iscrowd="yes"), "annotation {ann}: field 'iscrowd' is 'yes' (expected 0 or 1)"),
    (lambda doc, image, ann: ann.pop("segmentation"), "annotation {ann}: field 'segmentation' is missing (expected polygons"),
    (lambda doc, image, ann: ann.update(segmentation="abc"), "annotation {ann}: field 'segmentation' is 'abc'"),
    (lambda doc, image, ann: ann.update(segmentation=[[1, 2, "x", 4, 5, 6]]),
     "field 'segmentation': polygon [1, 2, 'x', 4, 5, 6] (expected [x1, y1, x2, y2, ...]: an even count of finite"),
    (lambda doc, image, ann: ann.update(segmentation=[[1, 2, 3, 4, 5, 6, 7]]), "polygon [1, 2, 3, 4, 5, 6, 7]"),
    (lambda doc, image, ann: ann.update(segmentation={"counts": [1, 2], "size": [3, 3]}),
     "field 'segmentation': RLE size is [3, 3], but the image is [{height}, {width}]"),
    (lambda doc, image, ann: ann.update(segmentation={"size": [image["height"], image["width"]]}), "RLE counts is None"),
])
def test_coco_neighbours_that_break_mmdet_or_cocoeval(embedded, tmp_path, capsys, damage, expected):
    """Categories, repeated ids and masks: each would crash mmdet's Mask R-CNN loading or COCOeval, or be
    silently merged or dropped by them; each is one line naming the entry, and no report is written."""
    _, root = embedded
    shutil.copytree(root / "coco", tmp_path / "coco")
    ann_file = tmp_path / "coco" / "annotations" / "instances_val2017.json"
    doc = json.loads(ann_file.read_text())
    image, ann = _first_image_and_box(doc)
    names = {"image": image["id"], "ann": ann["id"], "width": image["width"], "height": image["height"],
             "category": doc["categories"][0]["id"]}
    damage(doc, image, ann)
    ann_file.write_text(json.dumps(doc))
    msg = fails(capsys, "--kind", "coco", "--path", tmp_path / "coco", "--out", tmp_path / "report.json")
    assert msg.startswith(f"error: {ann_file}: ") and expected.format(**names) in msg
    assert not (tmp_path / "report.json").exists()


def test_coco_zero_size_boxes_are_counted_not_refused(embedded, tmp_path):
    """Official train2017 holds two (cocoapi#355); mmdet drops boxes under 1 px, as the upstream recipes do."""
    _, root = embedded
    shutil.copytree(root / "coco", tmp_path / "coco")
    ann_file = tmp_path / "coco" / "annotations" / "instances_train2017.json"
    doc = json.loads(ann_file.read_text())
    image, ann = _first_image_and_box(doc)
    ann["bbox"] = [1.5, 2.0, 3.0, 0.0]
    # a box from float polygon coordinates may pass the border by a fraction of a pixel
    other = next(a for a in doc["annotations"] if a is not ann and not a.get("iscrowd"))
    width = next(i["width"] for i in doc["images"] if i["id"] == other["image_id"])
    other["bbox"] = [width - 4.0, 0.0, 4.5, 2.0]
    ann_file.write_text(json.dumps(doc))
    # masks with no polygon of 3 points: counted, as mmdet ignores those instances (real files may hold them)
    masked = [a for a in doc["annotations"] if isinstance(a["segmentation"], list) and a is not ann]
    masked[0]["segmentation"], masked[1]["segmentation"] = [[1.0, 2.0, 3.0, 4.0]], []
    ann_file.write_text(json.dumps(doc))
    report = check_dataset("coco", tmp_path / "coco")
    assert report["train2017"]["degenerate_boxes"] == 1 and report["val2017"]["degenerate_boxes"] == 0
    assert report["train2017"]["degenerate_masks"] == 2 and report["val2017"]["degenerate_masks"] == 0


def test_ade20k_image_without_annotation(embedded, tmp_path, capsys):
    _, root = embedded
    shutil.copytree(root / "ade20k", tmp_path / "ade")
    (tmp_path / "ade" / "annotations" / "validation" / "ADE_val_00000002.png").unlink()
    msg = fails(capsys, "--kind", "ade20k", "--path", tmp_path / "ade")
    assert str(tmp_path / "ade" / "images" / "validation" / "ADE_val_00000002.jpg") in msg and "no annotation" in msg


def test_ade20k_label_out_of_range(embedded, tmp_path):
    import numpy as np
    from PIL import Image

    _, root = embedded
    shutil.copytree(root / "ade20k", tmp_path / "ade")
    ann = tmp_path / "ade" / "annotations" / "training" / "ADE_train_00000001.png"
    label = np.asarray(Image.open(ann)).copy()
    label[0, 0] = 200
    Image.fromarray(label).save(ann)
    with pytest.raises(DataError, match="label value 200 out of range") as info:
        check_dataset("ade20k", tmp_path / "ade")
    assert str(ann) in str(info.value)
    # real ADE20K has 150 classes: the same map passes a 150-class check without the 200
    label[0, 0] = 150
    Image.fromarray(label).save(ann)
    assert check_dataset("ade20k", tmp_path / "ade", num_classes=150)["max_label"] == 150


def test_embedded_set_without_manifest_is_incomplete(embedded, tmp_path):
    params, root = embedded
    params = json.loads(json.dumps(params))
    shutil.copytree(root / "attack", tmp_path / "attack")
    params["data"]["embedded"]["root"] = str(tmp_path)
    with pytest.raises(DataError, match=r"manifest.json: missing"):
        check_all(params, ["attack"], log=lambda msg: None)


def test_kind_without_path_is_a_usage_error(capsys):
    msg = fails(capsys, "--kind", "coco")
    assert "--kind needs --path" in msg


def _real_layout_subsets(root: Path) -> Path:
    """A paper-scale params file whose data.real ImageNet has 5 training wnids; A and O hold 3 and 2."""
    wnids = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475"]
    for folder, classes, ext in (("imagenet/train", wnids, "JPEG"), ("imagenet-a", wnids[:3], "jpg"),
                                 ("imagenet-o", wnids[1:3], "jpg")):
        for wnid in classes:
            (root / folder / wnid).mkdir(parents=True)
            Image.new("RGB", (8, 8), (40, 90, 160)).save(root / folder / wnid / f"{wnid}_1.{ext}")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["scale"] = "paper"
    params["data"]["real"].update(imagenet=str(root / "imagenet"), imagenet_a=str(root / "imagenet-a"),
                                  imagenet_o=str(root / "imagenet-o"))
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_real_imagenet_a_and_o_class_counts_come_from_the_data(tmp_path, capsys):
    params_file = _real_layout_subsets(tmp_path)
    rc, _, err = cli(capsys, "--params", params_file, "--dataset", "imagenet_a", "imagenet_o",
                     "--out", tmp_path / "report.json")
    assert rc == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["data"] == "real"
    assert report["datasets"]["imagenet_a"]["classes"] == 3
    assert report["datasets"]["imagenet_a"]["class_index_mask"] == [0, 1, 2]
    assert report["datasets"]["imagenet_o"]["class_index_mask"] == [1, 2]

    (tmp_path / "imagenet-o" / "n99999999").mkdir()  # not one of the training classes
    Image.new("RGB", (8, 8)).save(tmp_path / "imagenet-o" / "n99999999" / "x.jpg")
    msg = fails(capsys, "--params", params_file, "--dataset", "imagenet_a", "imagenet_o")
    assert str(tmp_path / "imagenet-o" / "n99999999") in msg and "not a training class" in msg
