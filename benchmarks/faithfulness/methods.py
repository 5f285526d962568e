"""The maps compared: the project's CAM (GradCAM and HiResCAM weightings, and attention
relevance), a peer library's GradCAM and HiResCAM, and baselines that ignore the model.

Every method maps a batch to [B, g, g] non-negative float32 maps for one class (0 real,
1 fake) at the model's grid resolution. Arguments: the model, the normalized batch ``x``,
the 0..1 images (for image-only baselines) and ``ids`` (stable image ids, which seed the
random baseline so it is one fixed pattern per image).

The priors and the random map exist ONLY here, as baselines: they show what a map that
ignores the model scores. They never belong in the library.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from poundcam.cam import ComparativeCAM

MethodFn = Callable[..., torch.Tensor]


def _grid(model) -> int:
    return model.visual.grid_size[0]


# -- the project's CAM ---------------------------------------------------------------------
CAM_METHODS = ("gradcam", "hirescam")  # ComparativeCAM(method=...) explaining one layer
CAM_LABEL = {"gradcam": "GradCAM", "hirescam": "HiResCAM", "relevance": "relevance"}


def comparative_cam(target: str, layer: int | None = -1, method: str = "gradcam") -> MethodFn:
    """ComparativeCAM's map for one class; ``layer=None``: the method's default."""

    def run(model, x, images, ids, cls):
        res = ComparativeCAM(model, layer=layer, target=target, method=method).attribute(
            x, on_invalid="report"
        )
        return (res.fake if cls == 1 else res.real).float()

    return run


# -- pytorch-grad-cam's GradCAM / HiResCAM at the same layer --------------------------------
def gradcam_library(layer: int = -1, method: str = "gradcam") -> MethodFn:
    def run(model, x, images, ids, cls):
        return _gradcam_library(model, x, cls, layer, method)

    return run


def _gradcam_library(model, x, cls, layer_index, method="gradcam"):
    """pytorch-grad-cam's GradCAM (or HiResCAM) on ``resblocks[layer].ln_1``: CLS and the
    trailing prompt tokens are dropped and the patch tokens reshaped row-major to the grid. The
    library normalizes each map to 0..1 (min-max); its output size is set to the grid so no
    resampling happens."""
    from pytorch_grad_cam import GradCAM, HiResCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    g = _grid(model)
    patches = model.visual.patch_token_slice()

    def reshape(t):
        t = t[:, patches]
        return t.reshape(t.shape[0], g, g, t.shape[-1]).permute(0, 3, 1, 2)

    library_cam: Any = {"gradcam": GradCAM, "hirescam": HiResCAM}[method]  # pytorch-grad-cam is untyped

    class GridGradCAM(library_cam):
        def get_target_width_height(self, input_tensor):
            return g, g

    layer = model.visual.transformer.resblocks[layer_index].ln_1
    with GridGradCAM(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
        inp = x.detach().clone().requires_grad_(True)  # frozen weights: the graph starts here
        out = cam(input_tensor=inp, targets=[ClassifierOutputTarget(cls)] * len(x))
    return torch.from_numpy(np.ascontiguousarray(out)).float()


# -- baselines that ignore the model --------------------------------------------------------
def random_map(model, x, images, ids, cls):
    """Uniform noise, one fixed pattern per image id."""
    g = _grid(model)
    out = []
    for i in ids:
        gen = torch.Generator().manual_seed(1_000_003 + int(i))
        out.append(torch.rand(g, g, generator=gen))
    return torch.stack(out)


def _cell_centres(g: int) -> tuple[torch.Tensor, torch.Tensor]:
    c = (torch.arange(g, dtype=torch.float32) + 0.5) / g  # 0..1
    rows, cols = torch.meshgrid(c, c, indexing="ij")
    return rows, cols


def centre_prior(model, x, images, ids, cls):
    """Gaussian centred on the image, sigma = a quarter of its side."""
    yy, xx = _cell_centres(_grid(model))
    m = torch.exp(-((yy - 0.5) ** 2 + (xx - 0.5) ** 2) / (2 * 0.25**2))
    return m.expand(len(x), -1, -1).clone()


def edge_prior(model, x, images, ids, cls):
    """Weight growing towards the image border: exp(-distance to the border / (side/8))."""
    yy, xx = _cell_centres(_grid(model))
    d = torch.minimum(torch.minimum(yy, 1 - yy), torch.minimum(xx, 1 - xx))
    m = torch.exp(-d / 0.125)
    return m.expand(len(x), -1, -1).clone()


def sobel_edges(model, x, images, ids, cls):
    """Sobel gradient magnitude of the grey image, averaged over each grid cell."""
    grey = images.mean(dim=1, keepdim=True)
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    k = torch.stack([kx, kx.t()])[:, None]
    gxy = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), k)
    mag = gxy.pow(2).sum(dim=1, keepdim=True).sqrt()
    g = _grid(model)
    return F.adaptive_avg_pool2d(mag, g)[:, 0].float()


BASELINES: dict[str, MethodFn] = {
    "Random map": random_map,
    "Centre prior": centre_prior,
    "Edge (border) prior": edge_prior,
    "Sobel edges": sobel_edges,
}


def cam_layers(n_layers: int, selected: int) -> list[int]:
    """The default layer (the last block) and the selected one, if different."""
    last = n_layers - 1
    return [last] if selected % n_layers == last else [last, selected % n_layers]


def build_methods(n_layers: int, selected: dict[str, int]) -> dict[str, MethodFn]:
    """The compared methods: ComparativeCAM with each weighting (``selected``: method -> the
    layer picked for it by the model-only rule) and each target at its default layer (the last
    block) and at the selected layer (if different), pytorch-grad-cam's GradCAM and HiResCAM at
    the same layers, ComparativeCAM's attention relevance with both targets (it spans every
    block, so no layer is chosen), and the baselines."""
    out: dict[str, MethodFn] = {}
    for method in CAM_METHODS:
        for layer in cam_layers(n_layers, selected[method]):
            for target in ("contrastive", "logit"):
                out[cam_name(target, layer, method)] = comparative_cam(target, layer, method)
    for method in CAM_METHODS:
        for layer in cam_layers(n_layers, selected[method]):
            out[library_name(layer, method)] = gradcam_library(layer, method)
    for target in ("contrastive", "logit"):
        out[relevance_name(target)] = comparative_cam(target, None, "relevance")
    out.update(BASELINES)
    return out


def cam_name(target: str, layer: int, method: str = "gradcam") -> str:
    return f"ComparativeCAM {CAM_LABEL[method]} ({target}, L{layer})"


def relevance_name(target: str) -> str:
    return f"ComparativeCAM relevance ({target})"


def library_name(layer: int, method: str = "gradcam") -> str:
    return f"pytorch-grad-cam {CAM_LABEL[method]} (L{layer})"


MODEL_FREE = {"Random map", "Centre prior", "Edge (border) prior", "Sobel edges"}


def compute_maps(
    fn: MethodFn,
    model,
    x: torch.Tensor,
    images: torch.Tensor,
    ids,
    cls: int = 1,
    batch: int = 32,
    name: str = "",
) -> torch.Tensor:
    """Maps of one method for a set, in batches; [N, g, g] float32."""
    out = []
    for i in range(0, len(x), batch):
        out.append(fn(model, x[i : i + batch], images[i : i + batch], ids[i : i + batch], cls).cpu())
    maps = torch.cat(out)
    if not torch.isfinite(maps).all():
        raise RuntimeError(f"{name}: non-finite map values")
    return maps


def upsample(maps: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(maps[:, None].float(), size=(size, size), mode="bilinear", align_corners=False)[:, 0]


__all__ = [
    "BASELINES",
    "CAM_LABEL",
    "CAM_METHODS",
    "MODEL_FREE",
    "build_methods",
    "cam_layers",
    "cam_name",
    "comparative_cam",
    "compute_maps",
    "library_name",
    "relevance_name",
    "upsample",
]
