"""Statistics of hand-made maps, against values worked out by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from poundcam.cam.stats import class_stats, comparative_stats, compute_stats
from poundcam.preprocess.transform import geometry_for

SQUARE = geometry_for(224, 224)  # resized 256x256, crop at (16, 16), 8/7 resized px per original px


def centre(row, col, grid, geom=SQUARE):
    cell = 224 / grid
    sx, sy = geom.scale
    return [((col + 0.5) * cell + geom.crop_left) / sx, ((row + 0.5) * cell + geom.crop_top) / sy]


def test_single_hot_cell():
    m = np.zeros((4, 4))
    m[1, 2] = 2.0
    s = class_stats(m, SQUARE)
    assert s["max"] == 2.0 and s["mean"] == pytest.approx(2 / 16)
    assert s["area_half_max"] == pytest.approx(1 / 16)
    assert s["entropy"] == pytest.approx(0.0, abs=1e-12)
    assert s["peak"] == pytest.approx(centre(1, 2, 4)) and s["peak_cell"] == [1, 2]
    assert s["centroid"] == pytest.approx(centre(1, 2, 4))


def test_two_cells_and_a_weak_one():
    m = np.zeros((4, 4))
    m[0, 0], m[3, 3], m[2, 0] = 1.0, 1.0, 0.25
    s = class_stats(m, SQUARE)
    assert s["area_half_max"] == pytest.approx(2 / 16)
    p = np.array([1, 1, 0.25]) / 2.25
    assert s["entropy"] == pytest.approx(float(-(p * np.log(p)).sum() / math.log(16)))
    assert s["peak_cell"] == [0, 0]  # first maximum in row-major order
    cx = (centre(0, 0, 4)[0] + centre(3, 3, 4)[0] + 0.25 * centre(2, 0, 4)[0]) / 2.25
    cy = (centre(0, 0, 4)[1] + centre(3, 3, 4)[1] + 0.25 * centre(2, 0, 4)[1]) / 2.25
    assert s["centroid"] == pytest.approx([cx, cy])


def test_uniform_map_has_entropy_one_and_full_area():
    s = class_stats(torch.full((7, 7), 0.3), SQUARE)
    assert s["entropy"] == pytest.approx(1.0)
    assert s["area_half_max"] == 1.0
    assert s["centroid"] == pytest.approx([112 / (8 / 7) + 16 / (8 / 7)] * 2)
    assert s["max"] == pytest.approx(0.3) and s["mean"] == pytest.approx(0.3)


def test_all_zero_map():
    s = class_stats(np.zeros((7, 7)), SQUARE)
    assert s == {
        "max": 0.0,
        "mean": 0.0,
        "area_half_max": 0.0,
        "entropy": None,
        "peak": None,
        "centroid": None,
    }


def test_correlation_and_fake_share():
    r = np.zeros((2, 2))
    f = np.zeros((2, 2))
    r[0, 0], f[0, 1] = 1.0, 3.0
    c = comparative_stats(r, f)
    assert c["correlation"] == pytest.approx(-1 / 3)
    assert c["fake_share"] == pytest.approx(0.75)
    assert comparative_stats(r, 2 * r)["correlation"] == pytest.approx(1.0)
    assert comparative_stats(r, 2 * r)["fake_share"] == pytest.approx(2 / 3)
    z = np.zeros((2, 2))
    assert comparative_stats(z, z) == {"correlation": None, "fake_share": None}
    assert comparative_stats(z, f) == {"correlation": None, "fake_share": 1.0}


def test_compute_stats_is_json_ready():
    real = torch.zeros(7, 7)
    fake = torch.zeros(7, 7)
    real[2, 3], fake[5, 1] = 0.5, 1.5
    s = compute_stats(real, fake, geometry_for(1000, 229))
    assert set(s) == {"real", "fake", "comparative"}
    assert json.loads(json.dumps(s)) == s
    assert s["comparative"]["fake_share"] == pytest.approx(0.75)


@pytest.mark.parametrize(
    "bad", [np.full((3, 3), -1.0), np.full((3, 3), np.nan), np.zeros((3, 4)), np.zeros(9)]
)
def test_invalid_maps_are_rejected(bad):
    with pytest.raises(ValueError):
        class_stats(bad, SQUARE)
