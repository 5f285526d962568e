"""The planted artifacts of the faithfulness evaluation (benchmarks/faithfulness/data.py): each
changes the image only around its recorded region, is reproducible, and has its own detector
cache key; adding the others left the first one's data and key unchanged."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from benchmarks.faithfulness.data import (
    ARTIFACTS,
    DataSettings,
    generator,
    make_batch,
    plant,
    scenes,
    sensor_pattern,
    watermark_pattern,
)
from benchmarks.faithfulness.settings import PROFILES, profile_for
from benchmarks.faithfulness.train import settings_key

KEYS = {"quick": "fc5b849df07e20cb", "full": "8253ea9387226b64"}  # the committed detectors'


@pytest.mark.parametrize("name", ["quick", "full"])
def test_the_first_artifact_keeps_its_key_and_each_other_has_its_own(name):
    first = profile_for(name, ARTIFACTS[0])
    assert first is PROFILES[name]
    assert settings_key(first.model, first.data, first.train) == KEYS[name]
    keys = {KEYS[name]}
    for artifact in ARTIFACTS[1:]:
        other = profile_for(name, artifact)
        assert other.name == f"{name}-{artifact}"
        keys.add(settings_key(other.model, other.data, other.train))
    assert len(keys) == len(ARTIFACTS)


@pytest.mark.parametrize("artifact", ARTIFACTS)
def test_artifact_lies_in_its_region_and_is_reproducible(artifact):
    s = dataclasses.replace(DataSettings(), artifact=artifact)
    a = make_batch(0, "select", 0, 4, s, fake_share=1.0)
    b = make_batch(0, "select", 0, 4, s, fake_share=1.0)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    g = generator(0, "select", 0)
    clean = scenes(g, 4, s)
    planted, masks = plant(g, clean, s)
    diff = (planted - clean).abs().amax(dim=1)  # [B, H, W]
    for d, m in zip(diff, masks, strict=True):
        assert m.any()
        assert d[m].mean() > 0.02  # the artifact is there
        # away from the feathered edge (3 px) the image outside the region is untouched
        near = torch.nn.functional.max_pool2d(m[None, None].float(), 21, 1, 10)[0, 0] > 0
        assert d[~near].max() < 1e-3


@pytest.mark.parametrize("pattern", [sensor_pattern, watermark_pattern])
def test_fixed_patterns_survive_the_training_augmentations(pattern):
    k = pattern(DataSettings())
    assert torch.allclose(k, k.flip(1, 2)) and torch.allclose(k, k.transpose(1, 2))
    assert abs(float(k.mean())) < 1e-5 and abs(float(k.std()) - 1) < 1e-2


def test_the_watermark_lies_in_the_mid_band_of_each_block():
    """All of the watermark's energy is in the DCT frequencies of its band, in every 8x8 block."""
    from benchmarks.faithfulness.data import WATERMARK_BAND, WATERMARK_BLOCK, dct_basis

    n = WATERMARK_BLOCK
    x = torch.arange(n, dtype=torch.float64)
    dct = dct_basis(n)  # [u, x]; its rows are orthogonal, so projecting on them reads coefficients
    k = watermark_pattern(DataSettings())[0].double()
    blocks = k.unfold(0, n, n).unfold(1, n, n)  # [rows, cols, n, n]
    coeffs = torch.einsum("ux,vy,rcxy->rcuv", dct, dct, blocks)
    band = (x[:, None] + x[None, :]).long()
    inside = torch.isin(band, torch.tensor(WATERMARK_BAND))
    assert coeffs[..., ~inside].abs().max() < 1e-6 * coeffs.abs().max()
