"""One eval transform (vitpe.data.transforms) for every stage: each gives exactly the tensors (or pixels)
its former hand-written copy gave; the copies are kept here verbatim as references."""
import math

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from torchvision import transforms as T

from vitpe.data.transforms import center_crop_transform, eval_transform, squash_transform

BICUBIC = T.InterpolationMode.BICUBIC


def old_train_eval(crop_pct, img_size):  # train/data.py eval_transform
    return create_transform(img_size, is_training=False, interpolation="bicubic", crop_pct=crop_pct)


def old_squash(img_size):  # evaluate/common.py
    return T.Compose([T.Resize((img_size, img_size), interpolation=BICUBIC), T.ToTensor(),
                      T.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)])


def old_pretext(size):  # evaluate/pretext.py
    return T.Compose([T.Resize(size, interpolation=BICUBIC), T.CenterCrop(size),
                      T.ToTensor(), T.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)])


def old_illustration(img_size, crop_ratio):  # report/mjp_figures.py
    return T.Compose([T.Resize(int(img_size / crop_ratio), interpolation=BICUBIC), T.CenterCrop(img_size),
                      T.ToTensor()])


def old_synth_resize_center_crop(image, size, crop_pct):  # data/synth.py
    image = image.convert("RGB")
    short = math.floor(size / crop_pct)
    w, h = image.size
    new_w, new_h = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float64)


@pytest.fixture(params=[(37, 52), (64, 40), (32, 32)], ids=["tall", "wide", "square"])
def picture(request):
    w, h = request.param
    pixels = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("img_size, crop_pct", [(16, 0.875), (32, 0.875), (24, 1.0), (16, 0.9)])
def test_eval_transforms_equal_the_former_copies_bit_for_bit(picture, img_size, crop_pct):
    assert torch.equal(eval_transform(img_size, crop_pct)(picture), old_train_eval(crop_pct, img_size)(picture))
    assert torch.equal(eval_transform(img_size, 1.0)(picture), old_pretext(img_size)(picture))
    assert torch.equal(eval_transform(img_size, crop_pct, output="tensor")(picture),
                       old_illustration(img_size, crop_pct)(picture))
    assert torch.equal(squash_transform(img_size)(picture), old_squash(img_size)(picture))
    pixels = eval_transform(img_size, crop_pct, interpolation="bilinear", output="uint8")(picture)
    assert pixels.dtype == torch.uint8
    assert np.array_equal(pixels.permute(1, 2, 0).numpy().astype(np.float64),
                          old_synth_resize_center_crop(picture, img_size, crop_pct))


def test_outputs_differ_as_documented_and_a_wrong_one_is_refused(picture):
    normalized = eval_transform(16, 0.875)(picture)
    plain = eval_transform(16, 0.875, output="tensor")(picture)
    mean, std = torch.tensor(IMAGENET_DEFAULT_MEAN)[:, None, None], torch.tensor(IMAGENET_DEFAULT_STD)[:, None, None]
    assert plain.min() >= 0 and plain.max() <= 1
    assert torch.allclose(normalized, (plain - mean) / std, atol=1e-6)
    assert center_crop_transform(16)(picture).shape == (3, 16, 16)
    with pytest.raises(ValueError, match="unknown transform output 'pil'"):
        eval_transform(16, 0.875, output="pil")
