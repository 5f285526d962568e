"""PoundNet's public entry points for explaining a block: forward_to / forward_from /
attention_from give the model's own forward, split at any block."""

from __future__ import annotations

import pytest
import torch

from poundcam.model.intermediates import BlockActivation


@pytest.fixture(scope="module")
def model(tiny_model_factory):
    return tiny_model_factory(seed=7).requires_grad_(False)


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("layer", [0, 1, -2, -1])
@pytest.mark.parametrize("point", ["ln_1", "output"])
def test_forward_from_forward_to_is_the_forward(model, x, layer, point):
    with torch.no_grad():
        want = model(x)
        start = model.forward_to(x, layer, point)
        got = model.forward_from(start)
    assert start.layer == layer % model.num_blocks and start.point == point
    assert start.activation.shape[:2] == (2, 1 + model.config.grid_size**2 + model.config.n_ctx_vision)
    assert (start.residual is None) == (point == "output")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("layer", [0, 2, -1])
def test_attention_from_gives_the_logits_and_each_blocks_attention(model, x, layer):
    with torch.no_grad():
        want = model(x)
        logits, attentions = model.attention_from(model.forward_to(x, layer, "ln_1"))
    torch.testing.assert_close(logits, want, rtol=1e-5, atol=1e-4)
    n = model.num_blocks
    first = layer % n
    assert [a.layer for a in attentions] == list(range(first, n))
    tokens = 1 + model.config.grid_size**2 + model.config.n_ctx_vision
    heads = model.config.vision_heads
    for a in attentions:
        queries = 1 if a.layer == n - 1 else tokens  # only CLS reaches the head after the last
        assert a.probs.shape == (2, heads, queries, tokens)
        torch.testing.assert_close(a.probs.sum(-1), torch.ones(2, heads, queries))


def test_attention_probabilities_are_the_blocks_own(model, x):
    """The written-out attention equals nn.MultiheadAttention's averaged weights."""
    block = model.visual.transformer.resblocks[1]
    with torch.no_grad():
        start = model.forward_to(x, 1, "ln_1")
        _, attentions = model.attention_from(start)
        _, weights = block.attn(
            start.activation,
            start.activation,
            start.activation,
            need_weights=True,
            average_attn_weights=False,
        )
    torch.testing.assert_close(attentions[0].probs, weights, rtol=1e-5, atol=1e-6)


def test_gradients_start_at_the_activation(model, x):
    with torch.no_grad():
        start = model.forward_to(x, -1)
    leaf = start.activation.detach().requires_grad_(True)
    logits = model.forward_from(start.with_activation(leaf))
    (grad,) = torch.autograd.grad(logits[:, 1].sum(), leaf)
    assert grad[:, model.patch_tokens].abs().amax() > 0
    assert all(p.grad is None for p in model.parameters())


def test_entry_point_arguments(model, x):
    assert model.patch_grid == (7, 7) and model.patch_tokens == slice(1, 50)
    assert model.block_index(-1) == model.num_blocks - 1 == 3
    with pytest.raises(ValueError, match="out of range"):
        model.forward_to(x, 4)
    with pytest.raises(ValueError, match="point"):
        model.forward_to(x, 0, "attn")
    start = BlockActivation(0, "output", torch.zeros(1, 3, 4))
    with pytest.raises(ValueError, match="shape"):
        start.with_activation(torch.zeros(1, 3, 5))
