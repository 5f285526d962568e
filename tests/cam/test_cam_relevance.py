"""ComparativeCAM(method="relevance"): Chefer, Gur and Wolf's (2021) gradient-weighted attention
relevance, both classes, against an implementation written here from the checkpoint's tensors
and the published rule (full N x N relevance matrices, graph from the input, every attention
row computed), independent of the model's entry points and of the engine's shortcuts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from poundcam import CAMError, ComparativeCAM
from poundcam.cam.batch_stats import compute_stats_batch
from poundcam.cam.render import render_heatmaps
from poundcam.preprocess.transform import preprocess_with_geometry

from .toy_vit import ToyViT


def _ln(x, sd, name):
    return F.layer_norm(x.float(), x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], 1e-5)


def _fp16(t):
    return t.half().float()


def scratch_relevance(model, x, score):
    """Relevance maps [B, g, g] of ``score(logits)`` computed from the vision tower's tensors.

    Forward written out from docs (poundnet-format.md): patch embedding, CLS, positions, the
    visual prompts (fp16-rounded) appended and replaced before each prompted block, pre-LN
    blocks with QuickGELU, ln_post(CLS) @ proj, CLIP logits. Rule: R = I; for each block,
    the replaced prompt rows are reset to themselves (fresh tokens), then
    R = R + mean_heads((dA * A)^+) @ R. Map: R[CLS, patch tokens]."""
    cfg = model.config
    sd = {k: v.detach() for k, v in model.visual.state_dict().items()}
    width, heads, n_ctx = cfg.vision_width, cfg.vision_heads, cfg.n_ctx_vision
    d = width // heads
    x = x.clone().requires_grad_(True)
    h = F.conv2d(x, sd["conv1.weight"], stride=cfg.patch_size).flatten(2).transpose(1, 2)
    b = h.shape[0]
    h = torch.cat([sd["class_embedding"].expand(b, 1, width), h], 1) + sd["positional_embedding"]
    h = torch.cat([h, _fp16(sd["VPT"]).expand(b, -1, -1)], 1)
    h = _ln(h, sd, "ln_pre")
    n = h.shape[1]
    probs, replaced = [], []
    for i in range(cfg.vision_layers):
        p = f"transformer.resblocks.{i}"
        fresh = f"{p}.VPT_shallow" in sd
        if fresh:
            h = torch.cat([h[:, :-n_ctx], _fp16(sd[f"{p}.VPT_shallow"]).expand(b, -1, -1)], 1)
        replaced.append(fresh)
        a = _ln(h, sd, f"{p}.ln_1")
        q, k, v = (a @ sd[f"{p}.attn.in_proj_weight"].t() + sd[f"{p}.attn.in_proj_bias"]).split(width, -1)
        q, k, v = (t.reshape(b, n, heads, d).transpose(1, 2) for t in (q, k, v))
        att = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, -1)
        probs.append(att)
        o = (att @ v).transpose(1, 2).reshape(b, n, width)
        h = h + o @ sd[f"{p}.attn.out_proj.weight"].t() + sd[f"{p}.attn.out_proj.bias"]
        m = _ln(h, sd, f"{p}.ln_2") @ sd[f"{p}.mlp.c_fc.weight"].t() + sd[f"{p}.mlp.c_fc.bias"]
        m = m * torch.sigmoid(1.702 * m)
        h = h + m @ sd[f"{p}.mlp.c_proj.weight"].t() + sd[f"{p}.mlp.c_proj.bias"]
    feats = _ln(h[:, 0], sd, "ln_post") @ sd["proj"]
    logits = model.logit_scale.detach().exp() * F.normalize(feats, dim=-1) @ model.text_features().t()
    grads = torch.autograd.grad(score(logits).sum(), probs)
    eye = torch.eye(n).expand(b, n, n)
    rel = eye.clone()
    for att, grad, fresh in zip(probs, grads, replaced, strict=True):
        if fresh:
            rel[:, n - n_ctx :] = eye[:, n - n_ctx :]
        rel = rel + (grad * att).clamp_min(0).mean(1) @ rel
    g = cfg.grid_size
    return rel[:, 0, 1 : 1 + g * g].reshape(b, g, g).detach(), logits.detach()


def toy_scratch_relevance(toy, x, score):
    """The same rule on the toy ViT's ordinary forward (no prompts)."""
    h = toy.tokens(x.clone().requires_grad_(True))
    probs = []
    for block in toy.blocks:
        out, att = block.attend(block.ln1(h))
        probs.append(att)
        h = h + out
        h = h + block.mlp(block.ln2(h))
    logits = toy.head(toy.norm(h[:, 0]))
    grads = torch.autograd.grad(score(logits).sum(), probs)
    b, n = h.shape[:2]
    rel = torch.eye(n).expand(b, n, n).clone()
    for att, grad in zip(probs, grads, strict=True):
        rel = rel + (grad * att).clamp_min(0).mean(1) @ rel
    return rel[:, 0, toy.patch_tokens].reshape(b, *toy.patch_grid).detach()


def fake_vs_real(lg):
    return lg[:, 1] - lg[:, 0]


def real_vs_fake(lg):
    return lg[:, 0] - lg[:, 1]


def assert_maps_close(got, want):
    scale = float(want.abs().max())
    assert scale > 0
    torch.testing.assert_close(got, want, rtol=1e-4, atol=2e-6 * scale)


@pytest.fixture(scope="module")
def fixture_inputs(official_dir):
    return torch.load(official_dir / "inputs.pt", weights_only=True)[:3]


@pytest.fixture(params=["official", "tiny-grid5"])
def model_and_input(request, make_model, fixture_inputs):
    if request.param == "official":
        return request.getfixturevalue("official_model"), fixture_inputs
    model = make_model(
        seed=12,
        vision_width=128,
        vision_layers=3,
        patch_size=16,
        grid_size=5,
        n_ctx_vision=3,
        prompt_depth_vision=3,
        prompt_num_text=2,
    )
    return model, torch.randn(2, 3, 80, 80, generator=torch.Generator().manual_seed(0))


def test_contrastive_relevance_equals_the_from_scratch_rule(model_and_input):
    model, x = model_and_input
    res = ComparativeCAM(model, method="relevance").attribute(x)
    want_fake, logits = scratch_relevance(model, x, fake_vs_real)
    want_real, _ = scratch_relevance(model, x, real_vs_fake)
    assert_maps_close(res.fake, want_fake)
    assert_maps_close(res.real, want_real)
    torch.testing.assert_close(res.logits, logits, rtol=1e-5, atol=1e-4)
    assert res.method == "relevance" and res.target == "contrastive"
    assert res.layer == 0 and res.point == "input"


def test_logit_relevance_equals_the_from_scratch_rule(model_and_input):
    model, x = model_and_input
    res = ComparativeCAM(model, method="relevance", target="logit").attribute(x)
    assert_maps_close(res.real, scratch_relevance(model, x, lambda lg: lg[:, 0])[0])
    assert_maps_close(res.fake, scratch_relevance(model, x, lambda lg: lg[:, 1])[0])


def test_relevance_of_a_model_that_only_implements_the_protocol():
    toy = ToyViT(seed=4).eval().requires_grad_(False)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    res = ComparativeCAM(toy, method="relevance").attribute(x)
    assert_maps_close(res.fake, toy_scratch_relevance(toy, x, fake_vs_real))
    assert_maps_close(res.real, toy_scratch_relevance(toy, x, real_vs_fake))


def test_frozen_model_plain_input_no_grad_left(make_model):
    model = make_model(seed=4).requires_grad_(False)
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        res = ComparativeCAM(model, method="relevance").attribute(x)
    assert (res.real.flatten(1).amax(1) > 0).all() and (res.fake.flatten(1).amax(1) > 0).all()
    assert not res.real.requires_grad and not res.logits.requires_grad
    assert all(p.grad is None for p in model.parameters())
    trainable = make_model(seed=5)  # requires_grad left on: still no .grad afterwards
    ComparativeCAM(trainable, method="relevance", target="logit").attribute(x[:1])
    assert all(p.grad is None for p in trainable.parameters())


def test_batch_independence_and_class_swap(official_model, fixture_inputs):
    for target in ("contrastive", "logit"):
        cam = ComparativeCAM(official_model, method="relevance", target=target)
        batch = cam.attribute(fixture_inputs)
        for i in range(fixture_inputs.shape[0]):
            one = cam.attribute(fixture_inputs[i : i + 1])
            for name in ("real", "fake"):
                a, b = getattr(one, name)[0], getattr(batch, name)[i]
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))
            assert not torch.allclose(batch.real[i], batch.fake[i])


def test_start_layer_and_arguments(official_model, fixture_inputs):
    late = ComparativeCAM(official_model, method="relevance", layer=-3)
    assert late.layer == 7 and late.config_id == "relevance-input-L7-contrastive"
    assert late.attribute(fixture_inputs[:1]).fake.max() > 0
    assert ComparativeCAM(official_model, method="relevance").config_id == "relevance-input-L0-contrastive"
    with pytest.raises(ValueError, match="point"):
        ComparativeCAM(official_model, method="relevance", point="ln_1")
    with pytest.raises(ValueError, match="target"):
        ComparativeCAM(official_model, method="relevance", target="probability")


def test_non_finite_input_is_reported(official_model, fixture_inputs):
    x = fixture_inputs[:2].clone()
    x[1, :, :5, :5] = float("nan")
    cam = ComparativeCAM(official_model, method="relevance")
    with pytest.raises(CAMError, match="image 1"):
        cam.attribute(x)
    res = cam.attribute(x, on_invalid="report")
    assert set(res.invalid) == {1} and not res.fake[1].any() and res.fake[0].max() > 0


def test_same_statistics_and_rendering(official_model):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (300, 500, 3), dtype=np.uint8))
    x, geometry, crop = preprocess_with_geometry(image)
    res = ComparativeCAM(official_model, method="relevance").attribute(x[None])
    (stats,) = compute_stats_batch(res.real, res.fake, [geometry])
    assert stats["fake"]["max"] == pytest.approx(float(res.fake.max()))
    assert stats["comparative"]["fake_share"] is not None
    out = render_heatmaps(res.real[0], res.fake[0], crop, image, geometry)
    assert out["fake_overlay"][:8] == b"\x89PNG\r\n\x1a\n"
