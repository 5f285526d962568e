"""ComparativeCAM's two weightings: GradCAM (channel means) and HiResCAM (token-wise)."""

from __future__ import annotations

import pytest
import torch

from poundcam import ComparativeCAM


def _reference(model, x, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Activation and contrastive gradient at ln_1 of ``layer``, from the full graph."""
    store = {}

    def hook(_mod, _inp, out):
        out.retain_grad()
        store["a"] = out

    handle = model.visual.transformer.resblocks[layer].ln_1.register_forward_hook(hook)
    try:
        xx = x.clone().requires_grad_(True)
        logits = model(xx)
        (logits[:, 1] - logits[:, 0]).sum().backward()
    finally:
        handle.remove()
    sl = model.visual.patch_token_slice()
    return store["a"].detach()[:, sl], store["a"].grad[:, sl]


@pytest.mark.parametrize("layer", [-1, 1])
def test_hirescam_is_tokenwise_gradient_times_activation(make_model, layer):
    model = make_model(seed=3)
    x = torch.randn(3, 3, 224, 224)
    res = ComparativeCAM(model, layer=layer, method="hirescam").attribute(x)
    a, g = _reference(model, x, layer)
    signed = (a * g).sum(-1).reshape(res.fake.shape)
    scale = signed.abs().max()
    torch.testing.assert_close(res.fake, signed.clamp_min(0), rtol=1e-5, atol=1e-5 * scale)
    torch.testing.assert_close(res.real, (-signed).clamp_min(0), rtol=1e-5, atol=1e-5 * scale)
    assert ((res.real > 0) & (res.fake > 0)).sum() == 0


def test_methods_differ_and_name_the_config(make_model):
    model = make_model(seed=4)
    x = torch.randn(2, 3, 224, 224)
    grad = ComparativeCAM(model, method="gradcam")
    hires = ComparativeCAM(model, method="hirescam")
    assert not torch.allclose(grad.attribute(x).fake, hires.attribute(x).fake)
    assert grad.config_id.startswith("gradcam-") and hires.config_id.startswith("hirescam-")


def test_unknown_method_is_refused(make_model):
    with pytest.raises(ValueError, match="method"):
        ComparativeCAM(make_model(), method="unknown")


@pytest.mark.parametrize("method", ["hirescam", "gradcam"])
def test_contrastive_maps_are_disjoint_so_their_correlation_is_never_positive(make_model, method):
    """docs/cam.md, Statistics: the two signs of one map never overlap, so the covariance is
    -mean(real) * mean(fake) <= 0."""
    from poundcam.cam.batch_stats import _comparative

    model = make_model(seed=8)
    res = ComparativeCAM(model, method=method).attribute(torch.randn(6, 3, 224, 224))
    assert not ((res.real > 0) & (res.fake > 0)).any()
    corr = [c["correlation"] for c in _comparative(res.real.double().numpy(), res.fake.double().numpy())]
    assert any(c is not None for c in corr)
    assert all(c is None or c <= 1e-12 for c in corr)
