"""The seed document's interface, PoundNetGradCAM, as a thin layer over ComparativeCAM with the
library's and the service's defaults."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
import torch.nn.functional as F

from poundcam import ComparativeCAM, PoundNetGradCAM
from poundcam.analysis import AnalysisOptions
from poundcam.settings import Settings


@pytest.fixture(scope="module")
def x(official_dir):
    return torch.load(official_dir / "inputs.pt", weights_only=True)[:3]


def _up(maps):
    return F.interpolate(maps[:, None], size=(224, 224), mode="bilinear", align_corners=False)[:, 0]


def _peaks(maps):
    return maps.abs().flatten(1).amax(1)


def _default(callable_, name):
    return inspect.signature(callable_).parameters[name].default


def test_one_default_per_setting_in_library_facade_and_service(official_model):
    settings = {f.name: f.default for f in dataclasses.fields(Settings)}
    options = AnalysisOptions()
    for setting, param in (("cam_method", "method"), ("cam_target", "target")):
        values = {
            settings[setting],
            getattr(options, setting),
            _default(ComparativeCAM, param),
            _default(PoundNetGradCAM, param),
        }
        assert len(values) == 1, f"{setting}: {values}"
    assert settings["cam_method"] == "hirescam"
    # the layer: None in the library means the method's default, the service's -1 for HiResCAM
    layers = {
        official_model.block_index(settings["cam_layer"]),
        official_model.block_index(options.cam_layer),
        ComparativeCAM(official_model).layer,
        PoundNetGradCAM(official_model).cam.layer,
    }
    assert layers == {official_model.num_blocks - 1}


def test_facade_takes_method_and_target(official_model):
    cam = PoundNetGradCAM(official_model, method="gradcam", target="logit")
    assert cam.cam.method == "gradcam" and cam.cam.target == "logit"
    with pytest.raises(ValueError, match="method"):
        PoundNetGradCAM(official_model, method="guided")
    with pytest.raises(ValueError, match="scale"):
        PoundNetGradCAM(official_model, scale="global")


def test_generate_cam_shapes_classes_and_shared_scale(official_model, x):
    cam = PoundNetGradCAM(official_model)
    fake = cam.generate_cam(x, target_class="fake")
    assert fake.shape == (3, 224, 224) and fake.dtype == torch.float32
    assert torch.equal(fake, cam.generate_cam(x, target_class=1))
    real = cam.generate_cam(x, target_class="real")
    assert torch.equal(real, cam.generate_cam(x, target_class=0))
    assert not torch.equal(real, fake)
    for maps in (real, fake):
        assert (maps >= 0).all() and (maps <= 1 + 1e-6).all()
    # shared scale: the stronger of an image's two maps peaks at 1, the weaker stays below
    torch.testing.assert_close(torch.maximum(_peaks(real), _peaks(fake)), torch.ones(3))
    assert (torch.minimum(_peaks(real), _peaks(fake)) < 1 - 1e-3).all()
    with pytest.raises(ValueError, match="target_class"):
        cam.generate_cam(x, target_class="dog")


def test_generate_cam_is_the_engine_map_upsampled(official_model, x):
    for method, target in (("hirescam", "contrastive"), ("gradcam", "logit")):
        ours = ComparativeCAM(official_model, target=target, method=method).attribute(x)
        real, fake = _up(ours.real), _up(ours.fake)
        shared = PoundNetGradCAM(official_model, target=target, method=method)
        peak = torch.maximum(_peaks(real), _peaks(fake)).clamp_min(1e-30)[:, None, None]
        torch.testing.assert_close(shared.generate_cam(x, "fake"), fake / peak, rtol=1e-5, atol=1e-6)
        per_map = PoundNetGradCAM(official_model, target=target, method=method, scale="per_map")
        expect = fake / _peaks(fake).clamp_min(1e-30)[:, None, None]
        torch.testing.assert_close(per_map.generate_cam(x, "fake"), expect, rtol=1e-5, atol=1e-6)


def test_generate_comparative_cam_difference_is_the_signed_contrastive_map(official_model, x):
    out = PoundNetGradCAM(official_model).generate_comparative_cam(x)
    assert {"real_cam", "fake_cam", "difference", "probs", "logits"} <= set(out)
    assert out["real_cam"].shape == out["fake_cam"].shape == (3, 224, 224)
    torch.testing.assert_close(out["difference"], out["fake_cam"] - out["real_cam"])
    signed = _up(ComparativeCAM(official_model).attribute(x).signed())
    torch.testing.assert_close(
        out["difference"], signed / _peaks(signed)[:, None, None], rtol=1e-5, atol=1e-6
    )
    assert out["probs"].shape == (3, 2)
    torch.testing.assert_close(out["probs"].sum(-1), torch.ones(3))
    with torch.no_grad():
        torch.testing.assert_close(out["logits"], official_model(x), rtol=1e-5, atol=1e-4)
    # one shared scale: the stronger of the two maps peaks at 1
    torch.testing.assert_close(torch.maximum(_peaks(out["real_cam"]), _peaks(out["fake_cam"])), torch.ones(3))


def test_logit_target_difference_is_still_the_contrastive_map(official_model, x):
    out = PoundNetGradCAM(official_model, target="logit").generate_comparative_cam(x)
    signed = _up(ComparativeCAM(official_model, target="contrastive").attribute(x).signed())
    # same sign pattern as the contrastive map, scaled by the logit maps' shared peak
    peak = torch.maximum(_peaks(out["real_cam"]), _peaks(out["fake_cam"]))
    assert torch.allclose(peak, torch.ones(3))
    ratio = out["difference"].flatten(1).norm(dim=1) / signed.flatten(1).norm(dim=1)
    torch.testing.assert_close(out["difference"], signed * ratio[:, None, None], rtol=1e-4, atol=1e-6)


def test_per_map_scaling(official_model, x):
    out = PoundNetGradCAM(official_model, scale="per_map").generate_comparative_cam(x)
    for name in ("real_cam", "fake_cam", "difference"):
        torch.testing.assert_close(_peaks(out[name]), torch.ones(3))


def test_normalizing_an_all_zero_map_keeps_it_zero():
    zero = torch.zeros(2, 224, 224)
    assert torch.equal(PoundNetGradCAM._normalize(zero), zero)
    tiny = torch.zeros(1, 5, 5)
    tiny[0, 2, 2] = 1e-30
    assert PoundNetGradCAM._normalize(tiny).max() == pytest.approx(1.0)
