"""The two planted artifacts of the faithfulness evaluation (benchmarks/faithfulness/data.py):
each changes the image only around its recorded region, is reproducible, and has its own
detector cache key; adding the second left the first one's data and key unchanged."""

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
)
from benchmarks.faithfulness.settings import PROFILES, profile_for
from benchmarks.faithfulness.train import settings_key

KEYS = {"quick": "fc5b849df07e20cb", "full": "8253ea9387226b64"}  # the committed detectors'


@pytest.mark.parametrize("name", ["quick", "full"])
def test_the_first_artifact_keeps_its_key_and_the_second_has_its_own(name):
    first, second = profile_for(name, ARTIFACTS[0]), profile_for(name, "sensor-splice")
    assert first is PROFILES[name]
    assert settings_key(first.model, first.data, first.train) == KEYS[name]
    assert second.name == f"{name}-sensor-splice"
    assert settings_key(second.model, second.data, second.train) != KEYS[name]


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


def test_sensor_pattern_survives_the_training_augmentations():
    k = sensor_pattern(DataSettings())
    assert torch.allclose(k, k.flip(1, 2)) and torch.allclose(k, k.transpose(1, 2))
    assert abs(float(k.mean())) < 1e-5 and abs(float(k.std()) - 1) < 1e-2
