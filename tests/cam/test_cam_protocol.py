"""ComparativeCAM explains any model that implements the explanation protocol: a toy ViT that is
not a PoundNet (no ``visual``, no ``resblocks``) gets the textbook maps from the full graph."""

from __future__ import annotations

import pytest
import torch

from poundcam import ComparativeCAM
from poundcam.cam import AttentionExplainableModel, ExplainableModel

from .toy_vit import ToyViT


@pytest.fixture(scope="module")
def toy():
    return ToyViT(seed=3).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def x():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))


def full_graph_maps(model, x, layer, score, method):
    """Activation x gradient at ``blocks[layer].ln1`` from the model's ordinary forward, the
    graph starting at the input."""
    store = {}

    def hook(_module, _inputs, out):
        out.retain_grad()
        store["a"] = out

    handle = model.blocks[layer].ln1.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(x.clone().requires_grad_(True))
            score(logits).sum().backward()
    finally:
        handle.remove()
    sl = model.patch_tokens
    a, g = store["a"].detach()[:, sl], store["a"].grad[:, sl]
    w = g.mean(dim=1, keepdim=True) if method == "gradcam" else g
    return (a * w).sum(-1).reshape(-1, *model.patch_grid), logits.detach()


def test_the_toy_implements_the_protocol_and_nothing_of_poundnet(toy):
    assert isinstance(toy, ExplainableModel) and isinstance(toy, AttentionExplainableModel)
    assert not hasattr(toy, "visual") and not hasattr(toy, "autocast")


@pytest.mark.parametrize("method", ["hirescam", "gradcam"])
@pytest.mark.parametrize("layer", [-1, 0])
def test_maps_of_a_model_that_only_implements_the_protocol(toy, x, method, layer):
    res = ComparativeCAM(toy, layer=layer, method=method).attribute(x)
    signed, logits = full_graph_maps(toy, x, layer, lambda lg: lg[:, 1] - lg[:, 0], method)
    scale = float(signed.abs().max())
    torch.testing.assert_close(res.fake, signed.clamp_min(0), rtol=1e-5, atol=1e-5 * scale)
    torch.testing.assert_close(res.real, (-signed).clamp_min(0), rtol=1e-5, atol=1e-5 * scale)
    torch.testing.assert_close(res.logits, logits, rtol=1e-5, atol=1e-5)
    assert res.grid == 4 and res.method == method and res.layer == layer % 3

    res = ComparativeCAM(toy, layer=layer, method=method, target="logit").attribute(x)
    for name, cls in (("real", 0), ("fake", 1)):
        ref, _ = full_graph_maps(toy, x, layer, lambda lg, c=cls: lg[:, c], method)
        torch.testing.assert_close(
            getattr(res, name), ref.clamp_min(0), rtol=1e-5, atol=1e-5 * float(ref.abs().max())
        )
