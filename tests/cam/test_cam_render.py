"""Heatmap PNGs: valid files of the right sizes, a shared scale, nothing drawn where there is
no evidence, and a 16-bit raw map that reads back."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from poundcam.cam.render import MAX_ORIGINAL_SIDE, display_size, read_raw16_png, render_heatmaps
from poundcam.preprocess.transform import preprocess_with_geometry

KEYS = {
    "real_overlay",
    "fake_overlay",
    "real_overlay_original",
    "fake_overlay_original",
    "real_raw16",
    "fake_raw16",
}


def _image(size, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


@pytest.mark.parametrize("size", [(1000, 229), (300, 900), (3000, 600)])
def test_pngs_and_sizes(size):
    original = _image(size)
    _, geom, crop = preprocess_with_geometry(original)
    real = torch.rand(7, 7)
    fake = torch.rand(7, 7) * 3
    out = render_heatmaps(real, fake, crop, original, geom)
    assert set(out) == KEYS
    for name in ("real_overlay", "fake_overlay"):
        assert _png(out[name]).size == (224, 224) and _png(out[name]).mode == "RGB"
    for name in ("real_overlay_original", "fake_overlay_original"):
        assert _png(out[name]).size == display_size(geom)
        assert max(display_size(geom)) == min(max(size), MAX_ORIGINAL_SIDE)
    for name, m in (("real_raw16", real), ("fake_raw16", fake)):
        img = _png(out[name])
        assert img.size == (7, 7) and img.mode.startswith("I;16")
        back = read_raw16_png(out[name])
        scale = float(m.max())
        assert np.abs(back - m.numpy()).max() <= scale / 65535 * 0.51 + 1e-9
        assert float(img.text["poundcam.scale"]) == pytest.approx(scale)


def test_all_zero_maps_draw_nothing():
    original = _image((640, 480), seed=1)
    _, geom, crop = preprocess_with_geometry(original)
    zero = torch.zeros(7, 7)
    out = render_heatmaps(zero, zero, crop, original, geom)
    assert np.array_equal(np.asarray(_png(out["real_overlay"])), np.asarray(crop))
    shown = original.resize(display_size(geom), Image.BILINEAR)
    assert np.array_equal(np.asarray(_png(out["fake_overlay_original"])), np.asarray(shown))
    assert not read_raw16_png(out["fake_raw16"]).any()
    assert float(_png(out["fake_raw16"]).text["poundcam.scale"]) == 0.0


def test_shared_scale_weak_map_looks_weak():
    original = _image((400, 400), seed=2)
    _, geom, crop = preprocess_with_geometry(original)
    strong = torch.zeros(7, 7)
    weak = torch.zeros(7, 7)
    strong[3, 3], weak[3, 3] = 1.0, 0.1
    out = render_heatmaps(weak, strong, crop, original, geom)
    base = np.asarray(crop, dtype=np.float64)
    change_real = np.abs(np.asarray(_png(out["real_overlay"]), dtype=np.float64) - base).sum()
    change_fake = np.abs(np.asarray(_png(out["fake_overlay"]), dtype=np.float64) - base).sum()
    assert 0 < change_real < 0.3 * change_fake


def _changed_pixels(out, name, original, geom):
    size = display_size(geom)
    shown = original.resize(size, Image.BILINEAR) if original.size != size else original
    drawn = np.asarray(_png(out[name]), dtype=np.int32)
    f = display_size(geom)[0] / geom.original[0]
    return np.abs(drawn - np.asarray(shown, dtype=np.int32)).sum(-1) > 0, f


def test_original_overlay_only_inside_the_crop():
    original = _image((1000, 229), seed=3)
    _, geom, crop = preprocess_with_geometry(original)
    m = torch.ones(7, 7)
    out = render_heatmaps(m, m, crop, original, geom)
    diff, f = _changed_pixels(out, "fake_overlay_original", original, geom)
    left, top, right, bottom = (v * f for v in geom.original_box())
    cols = np.nonzero(diff.any(0))[0]
    assert cols.min() >= int(left) - 1 and cols.max() <= int(np.ceil(right)) + 1
    assert diff[int(top) + 2 : int(bottom) - 2, int(left) + 5 : int(right) - 5].mean() > 0.95
    assert not diff[:, : int(left) - 1].any() and not diff[:, int(np.ceil(right)) + 1 :].any()
    assert not diff[: int(top) - 1].any() and not diff[int(np.ceil(bottom)) + 1 :].any()


@pytest.mark.parametrize("size,cell", [((300, 900), (5, 2)), ((1000, 229), (1, 6)), ((2000, 500), (3, 0))])
def test_hot_cell_drawn_at_its_place_on_the_original(size, cell):
    original = Image.new("RGB", size, (128, 128, 128))
    _, geom, crop = preprocess_with_geometry(original)
    m = torch.zeros(7, 7)
    m[cell] = 1.0
    out = render_heatmaps(m, torch.zeros(7, 7), crop, original, geom)
    diff, f = _changed_pixels(out, "real_overlay_original", original, geom)
    ys, xs = np.nonzero(diff)
    px, py = geom.grid_to_original(*cell, 7)
    cell_px = 32 / min(geom.scale) * f  # one grid cell in displayed pixels
    assert abs((xs.mean() + 0.5) - px * f) < 0.25 * cell_px
    assert abs((ys.mean() + 0.5) - py * f) < 0.25 * cell_px
