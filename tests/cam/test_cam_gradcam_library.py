"""ComparativeCAM(method="gradcam") gives pytorch-grad-cam's GradCAM at the same layer (ln_1 of a
vision block, patch tokens only), compared on the library's own un-scaled CAM and on its final
scaled output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from poundcam import ComparativeCAM


def patch_tokens_to_grid(model):
    """reshape_transform: drop CLS (first) and the prompt tokens (last), [B, N, W] -> [B, W, g, g]."""
    g = model.visual.grid_size
    sl = model.visual.patch_token_slice()

    def transform(t):
        t = t[:, sl]
        return t.reshape(t.shape[0], *g, t.shape[-1]).permute(0, 3, 1, 2)

    return transform


class RecordingGradCAM(GradCAM):
    """GradCAM that keeps its un-scaled per-layer CAM (before its ReLU and min-max scaling)."""

    def get_cam_image(self, *args, **kwargs):
        cam = super().get_cam_image(*args, **kwargs)
        self.raw_cam = cam
        return cam


class ContrastiveTarget:
    def __init__(self, sign: int):
        self.sign = sign

    def __call__(self, output):
        return self.sign * (output[..., 1] - output[..., 0])


def library_maps(model, x, layer, targets):
    block = model.visual.transformer.resblocks[layer]
    with RecordingGradCAM(model, [block.ln_1], reshape_transform=patch_tokens_to_grid(model)) as cam:
        scaled = cam(x.clone().requires_grad_(True), targets=targets)
        raw = np.maximum(cam.raw_cam, 0)
    return torch.from_numpy(raw).float(), torch.from_numpy(scaled).float()


def minmax_upsampled(maps, size):
    """Our maps through the library's presentation: resize to the input, then min-max per image."""
    up = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    lo = up.flatten(1).amin(1)[:, None, None]
    hi = up.flatten(1).amax(1)[:, None, None]
    return (up - lo) / (hi - lo + 1e-7)


@pytest.fixture(params=["official", "tiny"])
def model_and_input(request, make_model, official_dir):
    if request.param == "official":
        model = request.getfixturevalue("official_model")
        x = torch.load(official_dir / "inputs.pt", weights_only=True)[:3]
    else:
        model = make_model(seed=21, vision_layers=3, prompt_depth_vision=2)
        x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    return model, x


@pytest.mark.parametrize("layer", [-1, -3])
def test_equal_to_pytorch_grad_cam_logit_targets(model_and_input, layer):
    model, x = model_and_input
    n = x.shape[0]
    ours = ComparativeCAM(model, layer=layer, target="logit", method="gradcam").attribute(x)
    for cls, mine in ((0, ours.real), (1, ours.fake)):
        raw, scaled = library_maps(model, x, layer, [ClassifierOutputTarget(cls)] * n)
        torch.testing.assert_close(mine, raw, rtol=1e-5, atol=1e-5 * float(raw.max()))
        # the library's final output is the same map resized and min-max scaled (cv2 resize)
        for i in range(n):
            if mine[i].max() > 0:
                ref = minmax_upsampled(mine[i : i + 1], x.shape[-2:])[0]
                assert (ref - scaled[i]).abs().max() < 1e-4


def test_equal_to_pytorch_grad_cam_contrastive(model_and_input):
    model, x = model_and_input
    n = x.shape[0]
    ours = ComparativeCAM(model, target="contrastive", method="gradcam").attribute(x)
    fake, _ = library_maps(model, x, -1, [ContrastiveTarget(+1)] * n)
    real, _ = library_maps(model, x, -1, [ContrastiveTarget(-1)] * n)
    torch.testing.assert_close(ours.fake, fake, rtol=1e-5, atol=1e-5 * float(fake.max()))
    torch.testing.assert_close(ours.real, real, rtol=1e-5, atol=1e-5 * float(real.max()))
