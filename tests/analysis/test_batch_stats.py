"""compute_stats_batch equals compute_stats image by image."""

from __future__ import annotations

import pytest
import torch

from poundcam.cam.batch_stats import compute_stats_batch
from poundcam.cam.stats import compute_stats
from poundcam.preprocess.transform import geometry_for


def _close(a, b):
    if isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            _close(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _close(x, y)
    elif isinstance(a, float):
        assert isinstance(b, float) and b == pytest.approx(a, rel=1e-12, abs=1e-12)
    else:
        assert a == b and type(a) is type(b)


@pytest.mark.parametrize("grid", [1, 7, 16])
def test_equals_compute_stats(grid):
    torch.manual_seed(grid)
    n = 9
    real = torch.rand(n, grid, grid) * 3
    fake = torch.rand(n, grid, grid)
    real[1] = 0  # one map all zero
    real[2] = fake[2] = 0  # both
    fake[3] = 0.5  # constant: no correlation
    real[4] = 0
    real[4, 0, grid - 1] = 2.0  # one hot cell
    fake[5] = torch.where(fake[5] > 0.5, fake[5], torch.zeros(()))  # sparse
    real[6, 0, 0] = real[6].max() + 1  # ties for the maximum
    real[6, grid - 1, grid - 1] = real[6, 0, 0]
    sizes = [
        (1920, 1080),
        (300, 900),
        (224, 224),
        (97, 61),
        (5000, 300),
        (640, 480),
        (1920, 1080),
        (800, 800),
        (123, 4567),
    ]
    geoms = [geometry_for(*s) for s in sizes]
    batch = compute_stats_batch(real, fake, geoms)
    for i in range(n):
        _close(compute_stats(real[i], fake[i], geoms[i]), batch[i])


def test_refused_maps_fail_alone():
    real = torch.rand(3, 7, 7)
    fake = torch.rand(3, 7, 7)
    real[1, 2, 2] = float("nan")
    geoms = [geometry_for(640, 480)] * 3
    out = compute_stats_batch(real, fake, geoms)
    assert isinstance(out[1], ValueError)
    _close(compute_stats(real[0], fake[0], geoms[0]), out[0])
    _close(compute_stats(real[2], fake[2], geoms[2]), out[2])
    with pytest.raises(ValueError):
        compute_stats_batch(real, fake[:2], geoms)
