"""The two text features are computed once per model and reused; changing a text weight in
place invalidates them."""

from __future__ import annotations

import torch


def _count_text_calls(model):
    calls = []
    original = model.text.forward

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    model.text.forward = counting
    return calls


def test_text_features_computed_once(official_dir):
    from poundcam import PoundNet

    model = PoundNet.from_checkpoint(official_dir / "last.ckpt")
    calls = _count_text_calls(model)
    x = torch.randn(2, 3, 224, 224)
    first = model(x)  # a plain call, grad mode on: the frozen model still uses the cache
    for _ in range(3):
        assert torch.equal(model(x), first)
    with torch.no_grad():
        model(x[:1])
    assert len(calls) == 1


def test_cache_invalidated_by_in_place_update(make_model):
    model = make_model().requires_grad_(False)
    calls = _count_text_calls(model)
    x = torch.randn(2, 3, 224, 224)
    before = model(x)
    model(x)
    assert len(calls) == 1
    with torch.no_grad():
        ctx = model.prompt_learner.ctx_negative  # the real side
        ctx.add_(torch.randn(ctx.shape, generator=torch.Generator().manual_seed(0)))
    after = model(x)
    assert len(calls) == 2
    assert (before[:, 0] - after[:, 0]).abs().min() > 1e-3
    torch.testing.assert_close(before[:, 1], after[:, 1])
    model(x)
    assert len(calls) == 2
    with torch.no_grad():
        model.text.transformer.resblocks[0].mlp.c_fc.weight.mul_(1.5)
    model(x)
    assert len(calls) == 3


def test_cache_invalidated_by_load_state_dict(make_model):
    model = make_model(seed=0).requires_grad_(False)
    other = make_model(seed=1)
    calls = _count_text_calls(model)
    x = torch.randn(1, 3, 224, 224)
    model(x)
    model.load_state_dict(other.state_dict())
    with torch.no_grad():
        got = model(x)
        torch.testing.assert_close(got, other(x), rtol=0, atol=1e-4)
    assert len(calls) == 2


def test_prompt_training_recomputes_with_gradients(make_model):
    model = make_model()
    model.requires_grad_(False)
    model.prompt_learner.ctx_positive.requires_grad_(True)
    calls = _count_text_calls(model)
    logits = model(torch.randn(2, 3, 224, 224))
    logits[:, 1].sum().backward()
    assert model.prompt_learner.ctx_positive.grad is not None
    assert model.prompt_learner.ctx_positive.grad.abs().sum() > 0
    model(torch.randn(2, 3, 224, 224))
    assert len(calls) == 2
