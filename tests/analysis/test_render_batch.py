"""The batched drawing the Analyzer uses gives the pixels of render_heatmaps, image by image;
the PNG writer makes files that Pillow reads back exactly."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from poundcam.cam import render
from poundcam.preprocess.transform import preprocess_with_geometry


def _pixels(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    img.load()
    return np.asarray(img)


def _image(size, seed):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def test_batch_equals_one_by_one():
    sizes = [(640, 360), (300, 900), (640, 360), (97, 61), (2000, 500)]  # two share a geometry
    images = [_image(s, i) for i, s in enumerate(sizes)]
    prepared = [preprocess_with_geometry(im) for im in images]
    x = torch.stack([t for t, _, _ in prepared])
    geoms = [g for _, g, _ in prepared]
    real = torch.rand(len(images), 7, 7)
    fake = torch.rand(len(images), 7, 7) * 2
    real[1] = 0  # one image with an all-zero map, one with both maps zero
    real[3] = fake[3] = 0
    crop_rows = render.overlay_scanlines(x, real, fake)
    shown = [
        torch.from_numpy(render.display_original_pil(im, g)).permute(2, 0, 1)
        for im, g in zip(images, geoms, strict=True)
    ]
    original_rows = render.original_overlay_scanlines(real, fake, shown, geoms)
    for i, (im, (_, g, crop)) in enumerate(zip(images, prepared, strict=True)):
        batch = render.encode_heatmaps(crop_rows[i], original_rows[i], real[i], fake[i])
        single = render.render_heatmaps(real[i], fake[i], crop, im, g)
        assert set(batch) == set(single)
        for name in single:
            assert np.array_equal(_pixels(batch[name]), _pixels(single[name])), (i, name)
    alone = render.encode_heatmaps(crop_rows[3], None, real[3], fake[3])
    assert np.array_equal(_pixels(alone["fake_overlay"]), np.asarray(prepared[3][2]))


def test_crop_pixels_recovered_exactly():
    crops = torch.randint(0, 256, (4, 3, 224, 224), dtype=torch.uint8)
    from poundcam.preprocess.transform import normalize

    x = normalize(crops.float() / 255)
    assert torch.equal(render.crop_pixels(x), crops)


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (224, 224), (61, 97)])
def test_png_rgb_round_trip(shape):
    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
    data = render.png_rgb(render.png_rows(pixels))
    img = Image.open(io.BytesIO(data))
    assert img.mode == "RGB" and img.size == (shape[1], shape[0])
    assert np.array_equal(np.asarray(img), pixels.numpy())


def test_display_originals_batched_equals_single():
    from poundcam.preprocess.transform import geometry_for

    ims = [torch.randint(0, 256, (3, 600, 1000), dtype=torch.uint8) for _ in range(3)]
    ims.append(torch.randint(0, 256, (3, 100, 80), dtype=torch.uint8))
    geoms = [geometry_for(1000, 600)] * 3 + [geometry_for(80, 100)]
    out = render.display_originals(ims, geoms)
    for im, g, o in zip(ims, geoms, out, strict=True):
        w, h = render.display_size(g)
        assert tuple(o.shape) == (3, h, w) and o.dtype == torch.uint8
        assert torch.equal(o, render.display_original(im, g))
    assert out[3] is ims[3]  # already at the display size
