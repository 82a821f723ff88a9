"""One patchify/unpatchify (vitpe.models.patches) for every per-patch layout the code uses: each caller
gets exactly the tensors its former hand-written copy returned (kept here verbatim as references)."""
import pytest
import torch

from vitpe.attacks.april import patches_to_image
from vitpe.mae.masking import patchify as mae_patchify
from vitpe.mjp.jigsaw import _image, _patches, draw_jigsaw, permute_pixels_in_patches, shuffle_pixels
from vitpe.models.patches import patchify, unpatchify


# --- the four former copies, verbatim ---------------------------------------------------------------

def old_mae_patchify(images, patch_size):  # mae/masking.py
    b, c, h, w = images.shape
    gh, gw = h // patch_size, w // patch_size
    x = images.reshape(b, c, gh, patch_size, gw, patch_size)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(b, gh * gw, patch_size * patch_size * c)


def old_image_patches(images, patch):  # attacks/metrics.py
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // patch) * (w // patch), c * patch * patch)


def old_jigsaw_patches(images, patch):  # mjp/jigsaw.py _patches
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c, patch, patch)


def old_jigsaw_image(patches, height, width):  # mjp/jigsaw.py _image
    b, n, c, p, _ = patches.shape
    x = patches.reshape(b, height // p, width // p, c, p, p)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(b, c, height, width)


def old_patches_to_image(patches, grid):  # attacks/april.py
    n, c, p, _ = patches.shape
    return patches.reshape(grid, grid, c, p, p).permute(2, 0, 3, 1, 4).reshape(1, c, grid * p, grid * p)


@pytest.fixture(params=[(2, 3, 16, 16, 4), (1, 3, 8, 12, 4), (3, 1, 6, 6, 2)], ids=["square", "wide", "1ch"])
def images(request):
    b, c, h, w, p = request.param
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(0), dtype=torch.float64), p


def test_patchify_layouts_equal_the_former_copies_bit_for_bit(images):
    x, p = images
    assert torch.equal(patchify(x, p, "channels_last"), old_mae_patchify(x, p))
    assert torch.equal(mae_patchify(x, p), old_mae_patchify(x, p))
    assert torch.equal(patchify(x, p), old_image_patches(x, p))
    assert torch.equal(_patches(x, p), old_jigsaw_patches(x, p))
    five = old_jigsaw_patches(x, p)
    assert torch.equal(_image(five, *x.shape[-2:]), old_jigsaw_image(five, *x.shape[-2:]))


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_unpatchify_inverts_patchify(images, layout):
    x, p = images
    assert torch.equal(unpatchify(patchify(x, p, layout), p, tuple(x.shape[-2:]), layout), x)


def test_layouts_differ_where_there_is_more_than_one_channel():
    x = torch.arange(2 * 3 * 4 * 4.0).reshape(2, 3, 4, 4)
    first, last = patchify(x, 2), patchify(x, 2, "channels_last")
    assert first[0, 0].tolist() == [0, 1, 4, 5, 16, 17, 20, 21, 32, 33, 36, 37]  # c, then the 2x2 pixels
    assert last[0, 0].tolist() == [0, 16, 32, 1, 17, 33, 4, 20, 36, 5, 21, 37]  # pixel by pixel, c inside
    assert torch.equal(unpatchify(first, 2), x)  # square grid by default


def test_april_patch_grid_and_jigsaw_shuffles_match_the_former_copies():
    grid, p = 4, 4
    patches = torch.randn(grid * grid, 3, p, p, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.equal(patches_to_image(patches), old_patches_to_image(patches, grid))
    x = torch.randn(2, 3, grid * p, grid * p, generator=torch.Generator().manual_seed(2))
    jigsaw = draw_jigsaw("pixels", grid, patch_size=p, np_rng=__import__("numpy").random.default_rng(0))
    flat = old_jigsaw_patches(x, p).flatten(-2)[..., jigsaw.pixel_order]
    expected = old_jigsaw_image(flat.unflatten(-1, (p, p)), grid * p, grid * p)
    assert torch.equal(permute_pixels_in_patches(x, jigsaw.pixel_order, p), expected)
    shuffled = shuffle_pixels(x, jigsaw, p)
    index = jigsaw.order.expand(2, -1)
    reference = old_jigsaw_patches(expected, p)[torch.arange(2)[:, None], index]
    assert torch.equal(shuffled, old_jigsaw_image(reference, grid * p, grid * p))


def test_bad_sizes_and_layouts_fail_with_one_clear_line():
    with pytest.raises(ValueError, match="not a multiple of the patch size 4"):
        patchify(torch.zeros(1, 3, 10, 8), 4)
    with pytest.raises(ValueError, match="unknown patch layout 'hwc'"):
        patchify(torch.zeros(1, 3, 8, 8), 4, "hwc")
    with pytest.raises(ValueError, match="do not tile"):
        unpatchify(torch.zeros(1, 5, 48), 4)
