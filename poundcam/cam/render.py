"""Heatmap images: colour overlays for people, 16-bit grayscale maps for tools.

Both maps of an image are drawn on one shared scale (the larger of the two maxima), so a weak
map looks weak beside a strong one; an all-zero map draws nothing over the image. Opacity
follows the map value, so regions without evidence show the image unchanged.
All work is vectorized (numpy/torch); no per-pixel Python.
"""
from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, PngImagePlugin

from ..transform import CropGeometry

MAX_ORIGINAL_SIDE = 768  # overlays on the original geometry are drawn at most this large
ALPHA = 0.6

# Control points of a perceptual blue-cyan-yellow-red ramp (turbo-like), interpolated to 256.
_RAMP = np.array([
    [0.00, 0.19, 0.07, 0.23], [0.13, 0.27, 0.36, 0.85], [0.25, 0.16, 0.65, 0.98],
    [0.38, 0.10, 0.88, 0.73], [0.50, 0.45, 0.98, 0.36], [0.63, 0.80, 0.92, 0.20],
    [0.75, 0.99, 0.70, 0.16], [0.88, 0.93, 0.36, 0.07], [1.00, 0.48, 0.02, 0.01],
])
_x = np.linspace(0, 1, 256)
COLORMAP = (np.stack([np.interp(_x, _RAMP[:, 0], _RAMP[:, c]) for c in (1, 2, 3)], axis=1)
            * 255).round().astype(np.uint8)


def _to_tensor(m) -> torch.Tensor:
    t = m.detach().float().cpu() if isinstance(m, torch.Tensor) else torch.as_tensor(np.asarray(m), dtype=torch.float32)
    return t


def upsample(m, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of a grid map to (height, width)."""
    t = _to_tensor(m)[None, None]
    return F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()


def overlay(image: Image.Image, heat: np.ndarray) -> Image.Image:
    """Blend ``heat`` (values in 0..1, same size as image) over the image."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    h = np.clip(heat, 0.0, 1.0)
    colours = COLORMAP[(h * 255).astype(np.uint8)].astype(np.float32)
    alpha = (ALPHA * h)[..., None]
    return Image.fromarray((base * (1 - alpha) + colours * alpha).round().astype(np.uint8))


def encode_png(image: Image.Image, text: dict[str, str] | None = None, compress_level: int = 3) -> bytes:
    info = None
    if text:
        info = PngImagePlugin.PngInfo()
        for k, v in text.items():
            info.add_text(k, v)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info, compress_level=compress_level)
    return buf.getvalue()


def raw16_png(m) -> bytes:
    """16-bit grayscale PNG of the raw grid map; raw = value / 65535 * scale (tEXt 'poundcam.scale')."""
    a = _to_tensor(m).numpy().astype(np.float64)
    scale = float(a.max()) if a.size else 0.0
    q = np.zeros(a.shape, dtype=np.uint16) if scale <= 0 else np.round(a / scale * 65535).astype(np.uint16)
    return encode_png(Image.fromarray(q), {"poundcam.scale": repr(scale)})


def read_raw16_png(data: bytes) -> np.ndarray:
    """Inverse of raw16_png: the raw map as float64."""
    img = Image.open(io.BytesIO(data))
    scale = float(img.text.get("poundcam.scale", "0"))
    return np.asarray(img, dtype=np.float64) / 65535 * scale


def _original_heat(m, geometry: CropGeometry, size: tuple[int, int]) -> np.ndarray:
    """The grid map placed where the crop lies in the original image, drawn at ``size``."""
    w, h = size
    fx, fy = w / geometry.original[0], h / geometry.original[1]
    left, top, right, bottom = geometry.original_box()
    x0, y0 = int(round(left * fx)), int(round(top * fy))
    x1, y1 = max(x0 + 1, int(round(right * fx))), max(y0 + 1, int(round(bottom * fy)))
    heat = np.zeros((h, w), dtype=np.float32)
    patch = upsample(m, y1 - y0, x1 - x0)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    heat[cy0:cy1, cx0:cx1] = patch[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    return heat


def display_size(geometry: CropGeometry, max_side: int = MAX_ORIGINAL_SIDE) -> tuple[int, int]:
    w, h = geometry.original
    f = min(1.0, max_side / max(w, h))
    return max(1, round(w * f)), max(1, round(h * f))


def render_heatmaps(real, fake, crop_img: Image.Image, original_img: Image.Image | None,
                    geometry: CropGeometry) -> dict[str, bytes]:
    """PNGs for one image: ``{real,fake}_overlay`` over the model's input crop,
    ``{real,fake}_overlay_original`` over the original image, ``{real,fake}_raw16``."""
    maps = {"real": _to_tensor(real), "fake": _to_tensor(fake)}
    scale = max(float(maps["real"].max()), float(maps["fake"].max()))
    out: dict[str, bytes] = {}
    crop = crop_img.convert("RGB")
    orig = None
    if original_img is not None:
        size = display_size(geometry)
        orig = original_img.convert("RGB")
        if orig.size != size:
            orig = orig.resize(size, Image.BILINEAR)
    for name, m in maps.items():
        norm = m / scale if scale > 0 else torch.zeros_like(m)
        out[f"{name}_overlay"] = encode_png(overlay(crop, upsample(norm, crop.height, crop.width)))
        if orig is not None:
            out[f"{name}_overlay_original"] = encode_png(overlay(orig, _original_heat(norm, geometry, orig.size)))
        out[f"{name}_raw16"] = raw16_png(m)
    return out
