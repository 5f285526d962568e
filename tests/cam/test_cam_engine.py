"""ComparativeCAM (method="gradcam") equals GradCAM computed from the full autograd graph of the input; it is
batch independent, works on a frozen model with a plain input, and refuses points whose
gradients vanish."""

from __future__ import annotations

import pytest
import torch

from poundcam import CAMError, ComparativeCAM


def reference_gradcam(model, x, layer, score):
    """GradCAM the textbook way: the graph starts at the input, a hook keeps ln_1's output of
    ``layer`` with retain_grad, ``score(logits)`` is back-propagated through the whole model."""
    block = model.visual.transformer.resblocks[layer]
    store = {}

    def hook(module, inputs, output):
        output.retain_grad()
        store["act"] = output

    handle = block.ln_1.register_forward_hook(hook)
    try:
        x = x.clone().requires_grad_(True)
        with torch.enable_grad():
            logits = model(x)
            score(logits).sum().backward()
    finally:
        handle.remove()
    sl = model.visual.patch_token_slice()
    act, grad = store["act"][:, sl].detach(), store["act"].grad[:, sl]
    weights = grad.mean(dim=1, keepdim=True)
    cam = (act * weights).sum(-1).reshape(-1, *model.visual.grid_size)
    return cam, logits.detach()


def fake_logit(lg):
    return lg[:, 1]


def real_logit(lg):
    return lg[:, 0]


def fake_minus_real(lg):
    return lg[:, 1] - lg[:, 0]


def assert_maps_close(got, want):
    scale = want.abs().max()
    assert scale > 0
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(scale))


@pytest.fixture(scope="module")
def fixture_inputs(official_dir):
    return torch.load(official_dir / "inputs.pt", weights_only=True)[:4]


def _models(request, make_model):
    if request.param == "official":
        return request.getfixturevalue("official_model")
    if request.param == "tiny":
        return make_model(seed=11)
    return make_model(
        seed=12,
        vision_width=128,
        vision_layers=3,
        patch_size=16,
        grid_size=5,
        n_ctx_vision=3,
        prompt_depth_vision=3,
        prompt_num_text=2,
    )


@pytest.fixture(params=["official", "tiny", "tiny-grid5"])
def model_and_input(request, make_model, fixture_inputs):
    model = _models(request, make_model)
    size = model.config.image_size
    if size == 224:
        x = fixture_inputs
    else:
        x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    return model, x


@pytest.mark.parametrize("layer", [-1, -2, 1])
def test_logit_target_equals_full_graph_reference(model_and_input, layer):
    model, x = model_and_input
    res = ComparativeCAM(model, layer=layer, target="logit", method="gradcam").attribute(x)
    ref_real, logits = reference_gradcam(model, x, layer, real_logit)
    ref_fake, _ = reference_gradcam(model, x, layer, fake_logit)
    assert res.real.shape == res.fake.shape == (x.shape[0], *model.visual.grid_size)
    assert res.real.dtype == res.fake.dtype == torch.float32
    assert_maps_close(res.real, ref_real.clamp_min(0))
    assert_maps_close(res.fake, ref_fake.clamp_min(0))
    torch.testing.assert_close(res.logits, logits, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(res.probs, logits.softmax(-1), rtol=1e-5, atol=1e-6)
    assert res.layer == layer % len(model.visual.transformer.resblocks)
    assert res.target == "logit"


@pytest.mark.parametrize("layer", [-1, 0])
def test_contrastive_target_is_the_split_signed_map(model_and_input, layer):
    model, x = model_and_input
    res = ComparativeCAM(model, layer=layer, method="gradcam").attribute(x)
    assert res.target == "contrastive"
    signed, _ = reference_gradcam(model, x, layer, fake_minus_real)
    assert_maps_close(res.fake, signed.clamp_min(0))
    assert_maps_close(res.real, (-signed).clamp_min(0))
    # disjoint parts of one signed map
    assert not ((res.real > 0) & (res.fake > 0)).any()
    assert (res.real >= 0).all() and (res.fake >= 0).all()
    assert_maps_close(res.real - res.fake, -res.signed())
    assert_maps_close(res.signed(), signed)


def test_logit_maps_of_the_two_classes_differ(official_model, fixture_inputs):
    # GradCAM: on this random tiny model HiResCAM's logit maps of an image can both be all zero
    res = ComparativeCAM(official_model, target="logit", method="gradcam").attribute(fixture_inputs)
    for i in range(fixture_inputs.shape[0]):
        assert not torch.allclose(res.real[i], res.fake[i])
    assert res.real.max() > 0 and res.fake.max() > 0


def test_batch_independence(official_model, fixture_inputs):
    for target in ("contrastive", "logit"):
        cam = ComparativeCAM(official_model, target=target)
        batch = cam.attribute(fixture_inputs)
        for i in range(fixture_inputs.shape[0]):
            one = cam.attribute(fixture_inputs[i : i + 1])
            for name in ("real", "fake"):
                a, b = getattr(one, name)[0], getattr(batch, name)[i]
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max() + 1e-30))
            torch.testing.assert_close(one.logits[0], batch.logits[i], rtol=1e-5, atol=1e-4)
        # an image's maps do not depend on which images share its batch
        shuffled = cam.attribute(fixture_inputs.flip(0))
        torch.testing.assert_close(
            shuffled.fake.flip(0), batch.fake, rtol=1e-5, atol=1e-5 * float(batch.fake.max())
        )


def test_frozen_model_and_plain_input(make_model):
    model = make_model(seed=4).requires_grad_(False)
    x = torch.randn(2, 3, 224, 224)
    assert not x.requires_grad
    for target in ("contrastive", "logit"):
        res = ComparativeCAM(model, target=target).attribute(x)
        assert (res.real.flatten(1).amax(1) + res.fake.flatten(1).amax(1) > 0).all()
        assert not res.real.requires_grad and not res.logits.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert x.grad is None


def test_trainable_parameters_get_no_grad(make_model):
    model = make_model(seed=5)  # requires_grad left on
    ComparativeCAM(model, target="logit").attribute(torch.randn(1, 3, 224, 224))
    assert all(p.grad is None for p in model.parameters())


def test_works_inside_no_grad(official_model, fixture_inputs):
    with torch.no_grad():
        res = ComparativeCAM(official_model).attribute(fixture_inputs[:2])
    assert res.fake.max() > 0 or res.real.max() > 0


def test_output_of_last_block_raises(official_model, fixture_inputs):
    cam = ComparativeCAM(official_model, layer=-1, target="logit", point="output")
    with pytest.raises(CAMError, match="zero") as info:
        cam.attribute(fixture_inputs[:2])
    assert "block 9" in str(info.value)
    res = cam.attribute(fixture_inputs[:2], on_invalid="report")
    assert set(res.invalid) == {0, 1}
    assert not res.real.any() and not res.fake.any()


def test_output_of_an_earlier_block_works(official_model, fixture_inputs):
    res = ComparativeCAM(official_model, layer=-2, point="output").attribute(fixture_inputs[:2])
    assert not res.invalid and (res.real.max() > 0 or res.fake.max() > 0)


def test_non_finite_input_raises(official_model, fixture_inputs):
    x = fixture_inputs[:2].clone()
    x[1, :, :5, :5] = float("nan")
    with pytest.raises(CAMError, match="image 1"):
        ComparativeCAM(official_model).attribute(x)


def test_argument_checks(official_model):
    with pytest.raises(ValueError, match="target"):
        ComparativeCAM(official_model, target="probability")
    with pytest.raises(ValueError, match="point"):
        ComparativeCAM(official_model, point="attn")
    with pytest.raises(ValueError, match="out of range"):
        ComparativeCAM(official_model, layer=10)
    assert ComparativeCAM(official_model, layer=-10).layer == 0


def test_result_item(official_model, fixture_inputs):
    res = ComparativeCAM(official_model).attribute(fixture_inputs[:3])
    one = res.item(2)
    assert torch.equal(one.fake[0], res.fake[2]) and one.grid == 7


def test_after_a_forward_in_inference_mode(make_model):
    """Text features first computed under inference_mode (as a service does) are reusable by
    the CAM's autograd pass."""
    model = make_model(seed=6).requires_grad_(False)
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        logits = model(x)
    res = ComparativeCAM(model).attribute(x)
    torch.testing.assert_close(res.logits, logits, rtol=1e-5, atol=1e-4)
    with torch.inference_mode():
        res2 = ComparativeCAM(model).attribute(x)
    torch.testing.assert_close(res2.fake, res.fake)


def test_compiled_prefix_gives_the_eager_maps_and_pads_to_one_shape(make_model):
    """compile=True (torch.compile of the no-autograd part, as on a GPU worker): the maps and
    logits of the eager engine, also for a smaller batch padded to the compiled shape. Inductor
    fuses and reorders float operations, so equal within 1e-4 of the map's peak, not 1e-5."""
    import torch._dynamo

    torch._dynamo.reset()
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]  # process-wide count
    model = make_model(seed=6).requires_grad_(False)
    x = torch.randn(3, 3, 224, 224)
    eager = ComparativeCAM(model, target="contrastive")
    compiled = ComparativeCAM(model, target="contrastive", compile=True, compile_batch=3)
    for batch in (x, x[:2]):  # the second is padded to 3 rows: no new compilation
        want, got = eager.attribute(batch), compiled.attribute(batch)
        assert got.real.shape == want.real.shape
        for name in ("real", "fake"):
            w = getattr(want, name)
            peak = float(w.abs().max())
            torch.testing.assert_close(getattr(got, name), w, rtol=0, atol=1e-4 * peak)
        # logits carry the logit scale (100)
        torch.testing.assert_close(got.logits, want.logits, rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(got.probs, want.probs, rtol=0, atol=1e-4)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs == 1
