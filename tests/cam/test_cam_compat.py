"""The seed document's interface, PoundNetGradCAM, as a thin layer over ComparativeCAM."""
from __future__ import annotations

import pytest
import torch

from poundcam import ComparativeCAM, PoundNetGradCAM


@pytest.fixture(scope="module")
def x(official_dir):
    return torch.load(official_dir / "inputs.pt", weights_only=True)[:3]


def test_generate_cam_shapes_and_classes(official_model, x):
    cam = PoundNetGradCAM(official_model)
    fake = cam.generate_cam(x, target_class="fake")
    assert fake.shape == (3, 224, 224) and fake.dtype == torch.float32
    assert torch.equal(fake, cam.generate_cam(x, target_class=1))
    real = cam.generate_cam(x, target_class="real")
    assert torch.equal(real, cam.generate_cam(x, target_class=0))
    assert not torch.equal(real, fake)
    for maps in (real, fake):
        assert (maps >= 0).all() and (maps <= 1 + 1e-6).all()
        peaks = maps.flatten(1).amax(1)
        assert torch.all((peaks - 1).abs() < 1e-5) or torch.all((peaks == 0) | ((peaks - 1).abs() < 1e-5))
    with pytest.raises(ValueError, match="target_class"):
        cam.generate_cam(x, target_class="dog")


def test_generate_cam_is_the_engine_map_upsampled(official_model, x):
    ours = ComparativeCAM(official_model, target="logit").attribute(x)
    fake = PoundNetGradCAM(official_model).generate_cam(x, "fake")
    up = torch.nn.functional.interpolate(ours.fake[:, None], size=(224, 224), mode="bilinear",
                                         align_corners=False)[:, 0]
    expect = up / up.flatten(1).amax(1).clamp_min(1e-30)[:, None, None]
    torch.testing.assert_close(fake, expect, rtol=1e-5, atol=1e-6)


def test_generate_comparative_cam(official_model, x):
    out = PoundNetGradCAM(official_model).generate_comparative_cam(x)
    assert {"real_cam", "fake_cam", "difference", "probs", "logits"} <= set(out)
    assert out["real_cam"].shape == out["fake_cam"].shape == (3, 224, 224)
    torch.testing.assert_close(out["difference"], out["fake_cam"] - out["real_cam"])
    assert out["probs"].shape == (3, 2)
    torch.testing.assert_close(out["probs"].sum(-1), torch.ones(3))
    with torch.no_grad():
        torch.testing.assert_close(out["logits"], official_model(x), rtol=1e-5, atol=1e-4)
    # one shared scale: the stronger of the two maps peaks at 1
    peak = torch.maximum(out["real_cam"].flatten(1).amax(1), out["fake_cam"].flatten(1).amax(1))
    torch.testing.assert_close(peak, torch.ones(3))


def test_normalizing_an_all_zero_map_keeps_it_zero():
    zero = torch.zeros(2, 224, 224)
    assert torch.equal(PoundNetGradCAM._normalize(zero), zero)
    tiny = torch.zeros(1, 5, 5)
    tiny[0, 2, 2] = 1e-30
    assert PoundNetGradCAM._normalize(tiny).max() == pytest.approx(1.0)
