"""Renderings made on demand from stored maps: what ``poundcam render`` and the report draw.

The analysis stores the raw maps (float32) and one heatmap file per image; every other
picture is drawn here from the stored maps and the source image, with the functions and the
preprocessing the analysis itself uses on the CPU (the Pillow path), so each file equals, byte
for byte, what the analysis would have drawn:

- ``real_overlay``, ``fake_overlay``: each map over the 224 x 224 crop the model saw;
- ``real_overlay_original``, ``fake_overlay_original``: each map over the whole original
  (at most 512 px), where the crop lies;
- ``real_raw16``, ``fake_raw16``: the grid maps as 16-bit grayscale PNGs (no image needed);
- ``comparative``: the heatmap file the analysis writes (fake minus real over the original,
  with its legend).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
import torch

from ..preprocess.decode import DecodeLimits, decode_image
from ..preprocess.geometry import CropGeometry
from ..preprocess.transform import preprocess_with_geometry
from . import render

RENDERINGS = (
    "real_overlay",
    "fake_overlay",
    "real_overlay_original",
    "fake_overlay_original",
    "real_raw16",
    "fake_raw16",
    "comparative",
)
MAP_ONLY = ("real_raw16", "fake_raw16")  # drawn from the maps alone


@dataclasses.dataclass(frozen=True)
class SourceView:
    """What the renderings need of a source image: the model's normalized input [1, 3, S, S],
    its geometry, and the original at the display size (uint8 [3, h, w])."""

    x: torch.Tensor
    geometry: CropGeometry
    display: torch.Tensor


def source_view(data: bytes, limits: DecodeLimits | None = None) -> SourceView:
    """Decode image bytes (with the analysis's limits) and prepare them as the analysis's
    Pillow path does.

    Raises:
        poundcam.preprocess.decode.ImageDecodeError: the bytes are not a decodable image.
    """
    decoded = decode_image(data, limits or DecodeLimits())
    x, geometry, _ = preprocess_with_geometry(decoded.image)
    shown = render.display_original_pil(decoded.image, geometry, reducing_gap=render.DISPLAY_REDUCING_GAP)
    return SourceView(x[None], geometry, torch.from_numpy(shown).permute(2, 0, 1))


def render_maps(
    real, fake, source: SourceView | None, p_fake: float | None = None, names: Iterable[str] = RENDERINGS
) -> dict[str, bytes]:
    """PNG files drawn from one image's stored maps.

    Args:
        real: the stored real map [grid, grid] (float32 values).
        fake: the stored fake map.
        source: the source image's view; None draws only the maps-only files.
        p_fake: P(fake), written in the comparative heatmap's legend (required for it).
        names: which files (RENDERINGS); those that need the source are skipped without it.

    Returns:
        ``{name: PNG bytes}``.
    """
    real = torch.as_tensor(np.asarray(real, dtype=np.float32))
    fake = torch.as_tensor(np.asarray(fake, dtype=np.float32))
    names = [n for n in names if n in MAP_ONLY or source is not None]
    out: dict[str, bytes] = {}
    # (every name outside MAP_ONLY is left only with a source: ``source is not None`` below)
    if source is not None and {"real_overlay", "fake_overlay"} & set(names):
        rows = render.overlay_scanlines(source.x, real[None], fake[None])[0]
        for k, cls in enumerate(render.MAPS):
            out[f"{cls}_overlay"] = render.png_rgb(rows[k])
    if source is not None and {"real_overlay_original", "fake_overlay_original"} & set(names):
        rows = render.original_overlay_scanlines(real[None], fake[None], [source.display], [source.geometry])[
            0
        ]
        for k, cls in enumerate(render.MAPS):
            out[f"{cls}_overlay_original"] = render.png_rgb(rows[k])
    for k, cls in enumerate(render.MAPS):
        out[f"{cls}_raw16"] = render.raw16_png(real if k == 0 else fake)
    if source is not None and "comparative" in names:
        if p_fake is None:
            raise ValueError("the comparative heatmap needs P(fake)")
        rows = render.comparative_scanlines(real[None], fake[None], [source.display], [source.geometry])[0]
        out["comparative"] = render.comparative_png(rows, real, fake, p_fake)
    return {n: out[n] for n in names}
