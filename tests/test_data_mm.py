"""The embedded ADE20K and COCO sets through mmsegmentation's and mmdetection's own dataset classes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image


pytestmark = pytest.mark.mm


def test_mmseg_ade20k_dataset_with_our_classes(embedded):
    from mmcv.transforms import LoadImageFromFile
    from mmseg.datasets import ADE20KDataset
    from mmseg.datasets.transforms import LoadAnnotations

    params, root = embedded
    cfg = params["data"]["embedded"]
    doc = json.loads((root / "ade20k" / "classes.json").read_text())
    classes = tuple(doc["classes"])
    for split, count in (("training", cfg["seg_train"]), ("validation", cfg["seg_val"])):
        dataset = ADE20KDataset(
            data_root=str(root / "ade20k"),
            data_prefix=dict(img_path=f"images/{split}", seg_map_path=f"annotations/{split}"),
            metainfo=dict(classes=classes),  # a subset of ADE20K-150: mmseg maps its ids to 0..K-1
            pipeline=[LoadImageFromFile(), LoadAnnotations()],
            serialize_data=False,
        )
        assert len(dataset) == count and dataset.metainfo["classes"] == classes
        assert dataset.reduce_zero_label is True
        # what the loader yields: 0 ("other") -> 255 (ignored), ADE id -> index into our classes
        to_index = {0: 255, **{doc["label_ids"][name]: i for i, name in enumerate(classes)}}
        for i in range(count):
            sample = dataset[i]
            raw = np.asarray(Image.open(sample["seg_map_path"]))
            expected = np.vectorize(to_index.get)(raw)
            assert sample["img"].shape[:2] == sample["gt_seg_map"].shape == (cfg["seg_image_size"],) * 2
            assert np.array_equal(sample["gt_seg_map"], expected)
        labels = set(np.unique(np.concatenate([dataset[i]["gt_seg_map"].ravel() for i in range(count)])).tolist())
        assert labels <= set(range(len(classes))) | {255}


def test_mmdet_coco_dataset_with_our_classes(embedded):
    from mmcv.transforms import LoadImageFromFile
    from mmdet.datasets import CocoDataset
    from mmdet.datasets.transforms import LoadAnnotations

    params, root = embedded
    cfg = params["data"]["embedded"]
    for split, count in (("train2017", cfg["det_train"]), ("val2017", cfg["det_val"])):
        coco_json = json.loads((root / "coco" / "annotations" / f"instances_{split}.json").read_text())
        dataset = CocoDataset(
            data_root=str(root / "coco"),
            ann_file=f"annotations/instances_{split}.json",
            data_prefix=dict(img=f"{split}/"),
            metainfo=dict(classes=("disk", "square", "triangle")),
            filter_cfg=dict(filter_empty_gt=False),
            pipeline=[LoadImageFromFile(), LoadAnnotations(with_bbox=True, with_mask=True)],
            serialize_data=False,
        )
        assert len(dataset) == count
        instances = [inst for i in range(count) for inst in dataset.get_data_info(i)["instances"]]
        assert len(instances) == len(coco_json["annotations"])
        labels = sorted(a["category_id"] - 1 for a in coco_json["annotations"])
        assert sorted(inst["bbox_label"] for inst in instances) == labels
        assert sum(inst["ignore_flag"] for inst in instances) == sum(a["iscrowd"] for a in coco_json["annotations"])
        for i in range(count):
            sample = dataset[i]
            masks = sample["gt_masks"].to_ndarray()
            boxes = sample["gt_bboxes"].tensor.numpy()  # x1, y1, x2, y2
            assert len(masks) == len(boxes) > 0
            for mask, box in zip(masks, boxes):
                ys, xs = np.nonzero(mask)
                assert np.allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], box, atol=1.0)
