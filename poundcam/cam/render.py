"""Heatmap images: colour overlays for people, 16-bit grayscale maps for tools.

The analysis draws one file per image, the comparative heatmap (``comparative_scanlines`` +
``comparative_png``): the original image with the comparative evidence, fake minus real, on a
diverging scale (blue: real, red: fake), with a legend strip under it. Every other rendering
(crop overlays, per-class overlays, 16-bit maps) is drawn on demand from the stored maps by the
same functions (poundcam.cam.ondemand), pixel for pixel what the analysis would have drawn.

Both maps of an image are drawn on one shared scale (the larger of the two maxima), so a weak
map looks weak beside a strong one; an all-zero map draws nothing over the image. Opacity
follows the map value, so regions without evidence show the image unchanged. Rendering only
displays the maps: it never changes, smooths or fills them.

The work is split so that a batch can be drawn where its maps are (the GPU during analysis):

- ``overlay_scanlines`` / ``original_overlay_scanlines``: torch, any device, whole batches:
  the shared scale, bilinear upsampling, the colour ramp, the alpha blend and PNG's "Up" row
  filter, giving the bytes a PNG stores before compression.
- ``png_rgb`` / ``raw16_png``: CPU, one image each: deflate (ISA-L's when installed, zlib's
  otherwise; both release the GIL) and the PNG chunks, so many images encode in parallel threads.

``render_heatmaps`` draws one image with the same functions on the CPU.
"""

from __future__ import annotations

import functools
import io
import struct
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, PngImagePlugin

from ..constants import LABELS
from ..preprocess.batching import map_in_groups
from ..preprocess.geometry import CropGeometry
from ..preprocess.transform import CLIP_MEAN, CLIP_STD
from .colormap import OVERLAY_ALPHA, RAMP

try:  # ISA-L's deflate: several times faster than zlib's at the fast levels, same format
    from isal import isal_zlib as _deflate
except ImportError:  # pragma: no cover - depends on the installation
    import zlib as _deflate  # type: ignore[no-redef]  # the same compress() for the same format

MAX_ORIGINAL_SIDE = 512  # overlays on the original geometry are drawn at most this large
DISPLAY_REDUCING_GAP = 1.5  # Pillow originals: box-reduce, then bilinear (display only)
ALPHA = OVERLAY_ALPHA
COMPRESS_LEVEL = 1  # deflate level of the overlays (the fast end; raw maps are tiny)
MAPS = LABELS  # index 0 and 1 of the map axis in the batched functions
PNG_FILTER_UP = 2

_RAMP = np.array(RAMP)  # poundcam/cam/colormap.py: shared with the report's legend
_x = np.linspace(0, 1, 256)
COLORMAP = (
    (np.stack([np.interp(_x, _RAMP[:, 0], _RAMP[:, c]) for c in (1, 2, 3)], axis=1) * 255)
    .round()
    .astype(np.uint8)
)
# Diverging ramp of the comparative heatmap, from -1 (all real) through 0 to +1 (all fake):
# Moreland's cool-warm control points, interpolated to 256 (index = round((v + 1) * 127.5)).
_DIVERGING = np.array(
    [
        [-1.0, 59, 76, 192],
        [-0.5, 124, 159, 249],
        [0.0, 221, 221, 221],
        [0.5, 246, 154, 123],
        [1.0, 180, 4, 38],
    ]
)
_v = np.linspace(-1, 1, 256)
DIVERGING = (
    np.stack([np.interp(_v, _DIVERGING[:, 0], _DIVERGING[:, c]) for c in (1, 2, 3)], axis=1)
    .round()
    .astype(np.uint8)
)
LEGEND_HEIGHT = 30  # rows of the legend strip under the comparative heatmap
MIN_HEATMAP_WIDTH = 200  # narrower images are drawn on a canvas this wide (room for the legend)
BACKGROUND = 48  # grey level of the canvas around a narrow image and of the legend
_CONSTANTS: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
_DIVERGING_LUT: dict[torch.device, torch.Tensor] = {}
_CHUNK_VALUES = 1 << 25  # bound on float values per blend call (memory on the device)


def _to_tensor(m) -> torch.Tensor:
    if isinstance(m, torch.Tensor):
        return m.detach().float()
    return torch.as_tensor(np.asarray(m), dtype=torch.float32)


# --- maps ---------------------------------------------------------------------------------------


def shared_normalized(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """[n, g, g] x 2 -> [n, 2, g, g]: both maps of each image divided by the larger of their two
    maxima (all zero where both maps are)."""
    maps = torch.stack([_to_tensor(real), _to_tensor(fake)], dim=1)
    scale = maps.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
    return torch.where(
        scale > 0, maps / scale.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(maps)
    )


def upsample(m, height: int, width: int) -> torch.Tensor:
    """Bilinear upsampling (half-pixel centres) of grid maps [..., g, g] to [..., height, width]."""
    t = _to_tensor(m)
    lead = t.shape[:-2]
    t = t.reshape(-1, 1, *t.shape[-2:])
    out = F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)
    return out.reshape(*lead, height, width)


def display_size(geometry: CropGeometry, max_side: int = MAX_ORIGINAL_SIDE) -> tuple[int, int]:
    """(width, height) at which the original-geometry overlays are drawn."""
    w, h = geometry.original
    f = min(1.0, max_side / max(w, h))
    return max(1, round(w * f)), max(1, round(h * f))


def _crop_box(geometry: CropGeometry, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The crop's box (x0, y0, x1, y1) in display pixels at ``size`` = (width, height); it may
    reach outside the image by a rounding pixel."""
    w, h = size
    fx, fy = w / geometry.original[0], h / geometry.original[1]
    left, top, right, bottom = geometry.original_box()
    x0, y0 = int(round(left * fx)), int(round(top * fy))
    return x0, y0, max(x0 + 1, int(round(right * fx))), max(y0 + 1, int(round(bottom * fy)))


def _visible_patch(norm: torch.Tensor, geometry: CropGeometry, size: tuple[int, int]):
    """(the maps upsampled over the crop's box and clipped to the image, (cx0, cy0, cx1, cy1))."""
    w, h = size
    x0, y0, x1, y1 = _crop_box(geometry, size)
    patch = upsample(norm, y1 - y0, x1 - x0)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    return patch[..., cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0], (cx0, cy0, cx1, cy1)


def original_heat(norm: torch.Tensor, geometry: CropGeometry, size: tuple[int, int]) -> torch.Tensor:
    """Normalized maps [..., g, g] placed where the crop lies in the original image, drawn at
    ``size`` = (width, height): [..., height, width], zero outside the crop."""
    w, h = size
    patch, (cx0, cy0, cx1, cy1) = _visible_patch(norm, geometry, size)
    heat = patch.new_zeros((*patch.shape[:-2], h, w))
    heat[..., cy0:cy1, cx0:cx1] = patch
    return heat


def _constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(COLORMAP as float32 [256, 3], CLIP mean, CLIP std [1, 3, 1, 1]) on ``device``, made once
    per device: a small host-to-device copy from pageable memory waits for the device."""
    consts = _CONSTANTS.get(device)
    if consts is None:
        consts = _CONSTANTS[device] = (
            torch.from_numpy(COLORMAP).float().to(device),
            torch.tensor(CLIP_MEAN, dtype=torch.float32).view(1, 3, 1, 1).to(device),
            torch.tensor(CLIP_STD, dtype=torch.float32).view(1, 3, 1, 1).to(device),
        )
    return consts


# --- pixels -------------------------------------------------------------------------------------


def crop_pixels(x: torch.Tensor) -> torch.Tensor:
    """The uint8 crops [n, 3, H, W] the model saw, recovered exactly from its normalized input
    (normalization is (v / 255 - mean) / std in float32; the inverse is within 1e-4 of v)."""
    _, mean, std = _constants(x.device)
    return (x.float() * std + mean).mul_(255).round_().clamp_(0, 255).to(torch.uint8)


def display_original(image: torch.Tensor, geometry: CropGeometry) -> torch.Tensor:
    """An upright original uint8 [3, H, W] (any device) -> uint8 [3, h, w] at ``display_size``."""
    return display_originals([image], [geometry])[0]


def display_originals(
    images: Sequence[torch.Tensor], geometries: Sequence[CropGeometry]
) -> list[torch.Tensor]:
    """Upright originals uint8 [3, H, W] (any device) -> uint8 [3, h, w] at ``display_size``,
    antialiased bilinear (torch's uint8 kernel on the CPU, float elsewhere); originals of one
    size are resized together, a bounded number at a time."""
    out = list(images)
    sizes = [display_size(g)[::-1] for g in geometries]  # (h, w)
    todo = [i for i, (im, size) in enumerate(zip(images, sizes, strict=True)) if tuple(im.shape[-2:]) != size]

    def resize(x: torch.Tensor, key) -> torch.Tensor:
        size = key[2]
        if x.device.type == "cpu":
            return F.interpolate(x, size=size, mode="bilinear", antialias=True)
        y = F.interpolate(x.float(), size=size, mode="bilinear", antialias=True)
        return y.round_().clamp_(0, 255).to(torch.uint8)

    resized = map_in_groups(
        [images[i] for i in todo],
        [(images[i].shape, images[i].device, sizes[i]) for i in todo],
        resize,
        _CHUNK_VALUES,
    )
    for i, y in zip(todo, resized, strict=True):
        out[i] = y
    return out


def display_original_pil(
    image: Image.Image, geometry: CropGeometry, reducing_gap: float | None = None
) -> np.ndarray:
    """A PIL original -> uint8 [h, w, 3] at ``display_size`` (Pillow's bilinear resize;
    ``reducing_gap`` as in ``Image.resize``: 1.5 halves the time of a 1080p image for a mean
    difference under one level, for display only)."""
    size = display_size(geometry)
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if rgb.size != size:
        rgb = rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=reducing_gap)
    return np.array(rgb)


def blend(base: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
    """Colour ramp over images: base uint8 [n, 3, H, W], heat [n, k, H, W] in 0..1 ->
    uint8 [n, k, H, W, 3] (channels last): base * (1 - a) + colour(heat) * a, a = ALPHA * heat."""
    lut = _constants(heat.device)[0]
    h = heat.float().clamp(0.0, 1.0)
    idx = (h * 255).to(torch.uint8).flatten().long()
    colours = torch.index_select(lut, 0, idx).view(*h.shape, 3)
    alpha = h.mul_(ALPHA).unsqueeze(-1)
    out = base.permute(0, 2, 3, 1).unsqueeze(1).float() * (1 - alpha)
    out += colours.mul_(alpha)
    return out.round_().to(torch.uint8)


def png_rows(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 images [..., H, W, C] -> PNG scanlines [..., H, 1 + W*C] with the "Up" filter
    (each row minus the row above, modulo 256; the first row as it is)."""
    rows = pixels.reshape(*pixels.shape[:-2], pixels.shape[-2] * pixels.shape[-1])
    out = rows.new_empty((*rows.shape[:-1], rows.shape[-1] + 1))
    out[..., 0] = PNG_FILTER_UP
    out[..., :1, 1:] = rows[..., :1, :]
    out[..., 1:, 1:] = rows[..., 1:, :] - rows[..., :-1, :]  # uint8 arithmetic wraps mod 256
    return out


def overlay_scanlines(x: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Crop overlays for a batch: normalized inputs [n, 3, S, S] and maps [n, g, g] ->
    PNG scanlines uint8 [n, 2, S, 1 + 3S] (map axis: real, fake), on x's device."""
    size = x.shape[-2:]
    norm = shared_normalized(real, fake)
    out = x.new_empty((x.shape[0], 2, size[0], 1 + 3 * size[1]), dtype=torch.uint8)
    step = max(1, _CHUNK_VALUES // (6 * size[0] * size[1]))
    for a in range(0, x.shape[0], step):
        heat = upsample(norm[a : a + step], *size)
        out[a : a + step] = png_rows(blend(crop_pixels(x[a : a + step]), heat))
    return out


def original_overlay_scanlines(
    real: torch.Tensor,
    fake: torch.Tensor,
    displays: Sequence[torch.Tensor],
    geometries: Sequence[CropGeometry],
) -> list[torch.Tensor]:
    """Original-geometry overlays for a batch: maps [n, g, g], per image its original at
    ``display_size`` (uint8 [3, h, w], on the maps' device) and its geometry -> per image PNG
    scanlines uint8 [2, h, 1 + 3w]. Images that share a geometry are drawn together."""
    norm = shared_normalized(real, fake)

    def draw(geometry: CropGeometry, part: list[int]) -> torch.Tensor:
        w, h = display_size(geometry)
        base = torch.stack([displays[i] for i in part])
        # outside the crop the heat is zero and the image shows unchanged: blend the box only
        patch, (cx0, cy0, cx1, cy1) = _visible_patch(torch.stack([norm[i] for i in part]), geometry, (w, h))
        pixels = base.permute(0, 2, 3, 1).unsqueeze(1).repeat(1, 2, 1, 1, 1)
        pixels[:, :, cy0:cy1, cx0:cx1] = blend(base[..., cy0:cy1, cx0:cx1], patch)
        return png_rows(pixels)

    return _draw_by_geometry(geometries, lambda g: 6 * display_size(g)[0] * display_size(g)[1], draw)


def _draw_by_geometry(
    geometries: Sequence[CropGeometry],
    values: Callable[[CropGeometry], int],
    draw: Callable[[CropGeometry, list[int]], torch.Tensor],
) -> list[torch.Tensor]:
    """Per image the rows ``draw(geometry, indices)`` gives for the images that share a
    geometry, drawn together in chunks of at most ``_CHUNK_VALUES`` (``values(geometry)``: one
    image's share)."""
    out: list[torch.Tensor | None] = [None] * len(geometries)
    groups: dict[CropGeometry, list[int]] = {}
    for i, g in enumerate(geometries):
        groups.setdefault(g, []).append(i)
    for geometry, idx in groups.items():
        step = max(1, _CHUNK_VALUES // values(geometry))
        for a in range(0, len(idx), step):
            part = idx[a : a + step]
            rows = draw(geometry, part)
            for j, i in enumerate(part):
                out[i] = rows[j]
    return out  # type: ignore[return-value]  # every index is in one group


def _diverging_lut(device: torch.device) -> torch.Tensor:
    lut = _DIVERGING_LUT.get(device)
    if lut is None:
        lut = _DIVERGING_LUT[device] = torch.from_numpy(DIVERGING).float().to(device)
    return lut


def blend_signed(base: torch.Tensor, signed: torch.Tensor) -> torch.Tensor:
    """Diverging ramp over images: base uint8 [n, 3, H, W], signed [n, H, W] in -1..1 ->
    uint8 [n, H, W, 3]: base * (1 - a) + colour(signed) * a, a = ALPHA * |signed|."""
    lut = _diverging_lut(signed.device)
    v = signed.float().clamp(-1.0, 1.0)
    idx = ((v + 1) * 127.5).round_().to(torch.uint8).flatten().long()
    colours = torch.index_select(lut, 0, idx).view(*v.shape, 3)
    alpha = v.abs_().mul_(ALPHA).unsqueeze(-1)
    out = base.permute(0, 2, 3, 1).float() * (1 - alpha)
    out += colours.mul_(alpha)
    return out.round_().to(torch.uint8)


def heatmap_width(geometry: CropGeometry) -> int:
    """Width in pixels of the comparative heatmap of an image (its canvas)."""
    return max(display_size(geometry)[0], MIN_HEATMAP_WIDTH)


def comparative_scanlines(
    real: torch.Tensor,
    fake: torch.Tensor,
    displays: Sequence[torch.Tensor],
    geometries: Sequence[CropGeometry],
) -> list[torch.Tensor]:
    """The comparative heatmaps of a batch, without their legend: maps [n, g, g], per image
    its original at ``display_size`` (uint8 [3, h, w], on the maps' device) and its geometry
    -> per image PNG scanlines uint8 [h, 1 + 3W] (W = ``heatmap_width``). The evidence is
    fake minus real on the images' shared scale (``shared_normalized``), where the crop lies;
    outside it the image shows unchanged. Images that share a geometry are drawn together."""
    norm = shared_normalized(real, fake)
    signed = norm[:, 1] - norm[:, 0]

    def draw(geometry: CropGeometry, part: list[int]) -> torch.Tensor:
        w, h = display_size(geometry)
        base = torch.stack([displays[i] for i in part])
        patch, (cx0, cy0, cx1, cy1) = _visible_patch(torch.stack([signed[i] for i in part]), geometry, (w, h))
        pixels = base.new_full((len(part), h, heatmap_width(geometry), 3), BACKGROUND)
        pixels[:, :, :w] = base.permute(0, 2, 3, 1)
        pixels[:, cy0:cy1, cx0:cx1] = blend_signed(base[..., cy0:cy1, cx0:cx1], patch)
        return png_rows(pixels)

    return _draw_by_geometry(geometries, lambda g: 4 * display_size(g)[1] * heatmap_width(g), draw)


LEGEND_TEXT_XY = (3, 16)  # where the legend's text line starts (left, top of the font's line)
LEGEND_TEXT_FILL = (230, 230, 230)
_LEGEND_WORDS = ("P(fake) ", "   |max| ")  # the fixed words of the text line, around the numbers
_LEGEND_CHARS = "0123456789.e+-naif"  # what "%.3f" and "%.3g" write (the f of "inf" overhangs)


@functools.lru_cache(maxsize=64)
def _legend_base(width: int) -> Image.Image:
    """The part of the legend every image of this width shares: the colour bar and its ends."""
    from PIL import ImageDraw

    img = Image.new("RGB", (width, LEGEND_HEIGHT), (BACKGROUND,) * 3)
    bar_x0, bar_x1 = 34, width - 34
    ramp = DIVERGING[np.linspace(0, 255, max(1, bar_x1 - bar_x0)).round().astype(int)]
    img.paste(Image.fromarray(np.repeat(ramp[None], 8, axis=0)), (bar_x0, 4))
    draw = ImageDraw.Draw(img)
    font = _font()
    draw.text((3, 2), "real", fill=(124, 159, 249), font=font)
    draw.text((bar_x1 + 4, 2), "fake", fill=(246, 154, 123), font=font)
    return img


@functools.lru_cache(maxsize=1)
def _font():
    from PIL import ImageFont

    return ImageFont.load_default()


def legend_text(p_fake: float, scale: float) -> str:
    """The legend's text line: P(fake) and the map value the ends of the bar stand for."""
    return f"{_LEGEND_WORDS[0]}{p_fake:.3f}{_LEGEND_WORDS[1]}{scale:.3g}"


def _scanlines(img: Image.Image) -> np.ndarray:
    """An RGB image as PNG scanlines uint8 [H, 1 + 3W] (filter "None")."""
    pixels = np.asarray(img).reshape(img.height, 3 * img.width)
    rows = np.zeros((img.height, 1 + 3 * img.width), dtype=np.uint8)
    rows[:, 1:] = pixels
    return rows


def draw_legend_rows(width: int, text: str) -> np.ndarray:
    """The legend strip with ``text`` drawn by Pillow (ImageDraw.text, the default font): what
    ``legend_rows`` draws, at Pillow's cost (0.2-0.5 ms a line, holding the GIL throughout)."""
    from PIL import ImageDraw

    img = _legend_base(width).copy()
    ImageDraw.Draw(img).text(LEGEND_TEXT_XY, text, fill=LEGEND_TEXT_FILL, font=_font())
    return _scanlines(img)


class _LegendGlyphs:
    """The legend's text line from pieces of finished scanlines, put side by side per image.

    Each piece (a fixed word, or one character of the numbers) is drawn once by Pillow, alone,
    in the legend's colours over its background; its cell is its advance wide and as high as
    the tallest piece. Side by side, the cells are the line ``ImageDraw.text`` draws, pixel for
    pixel, when (checked here, else no pieces are made and Pillow draws every line):

    - every advance is a whole pixel and no pair of pieces is kerned, so a piece lands where
      the sum of the advances before it says, on the same pixel grid as when drawn alone;
    - every piece's pixels lie inside its cell: glyphs that overlap are composited by Pillow,
      which cells put side by side cannot do (a character that overhangs, the f of "inf", gets
      no cell: its lines are drawn by Pillow);
    - one line holding every ordered pair of pieces, drawn by Pillow, is the cells side by side.
    """

    def __init__(self, font) -> None:
        from PIL import ImageDraw

        pieces = [*_LEGEND_WORDS, *_LEGEND_CHARS]
        advances = [font.getlength(p) for p in pieces]
        if not all(a > 0 and float(a).is_integer() for a in advances):
            raise ValueError("an advance is not a whole number of pixels")
        adv = {p: int(a) for p, a in zip(pieces, advances, strict=True)}
        for x in pieces:
            for y in pieces:
                if font.getlength(x + y) != adv[x] + adv[y]:
                    raise ValueError(f"the pair {x!r} {y!r} is kerned")
        margin = 16  # around the line on the canvas: room for any glyph's overhang

        def mask(pieces: list[str]) -> np.ndarray:  # 255 over 0: the mask ImageDraw.text blends
            img = Image.new("L", (3 * margin + sum(adv[p] for p in pieces), 4 * margin), 0)
            ImageDraw.Draw(img).text((margin, margin), "".join(pieces), fill=255, font=font)
            return np.asarray(img)

        masks = {}
        for p in pieces:
            m = mask([p])
            if m[:, :margin].any() or m[:, margin + adv[p] :].any():
                if p in _LEGEND_WORDS:
                    raise ValueError(f"{p!r} reaches outside its advance")
                continue
            masks[p] = m[:, margin : margin + adv[p]]
        inked = np.flatnonzero(np.any([m.any(axis=1) for m in masks.values()], axis=0))
        if inked.size == 0 or inked[0] == 0 or inked[-1] == 4 * margin - 1:
            raise ValueError("the pieces do not fit the canvas")
        pairs = [p for x in masks for y in masks for p in (x, y)]
        line = mask(pairs)
        cells = np.concatenate([masks[p] for p in pairs], axis=1)
        end = margin + cells.shape[1]
        if not np.array_equal(line[:, margin:end], cells) or line[:, :margin].any() or line[:, end:].any():
            raise ValueError("the pieces side by side are not the line Pillow draws")
        self.top = int(inked[0]) - margin  # the cells' first row below the text's position
        self.height = int(inked[-1] - inked[0]) + 1
        # the colour of each mask value over the background: ImageDraw.text's blend
        levels = Image.new("RGB", (256, 1), (BACKGROUND,) * 3)
        levels.paste(LEGEND_TEXT_FILL, (0, 0, 256, 1), Image.fromarray(np.arange(256, dtype=np.uint8)[None]))
        colour = np.asarray(levels)[0]
        self.cells: dict[str, np.ndarray] = {}
        for p, m in masks.items():
            cell = colour[m[inked[0] : inked[-1] + 1]].reshape(self.height, 3 * adv[p])
            cell.flags.writeable = False  # shared by every thread drawing a legend
            self.cells[p] = cell

    def line(self, p_fake: float, scale: float) -> np.ndarray | None:
        """``legend_text(p_fake, scale)`` as scanline bytes [height, 3 * its advance] over the
        background, or None where a character has no cell."""
        cells = self.cells
        try:
            return np.concatenate(
                [
                    cells[_LEGEND_WORDS[0]],
                    *[cells[c] for c in f"{p_fake:.3f}"],
                    cells[_LEGEND_WORDS[1]],
                    *[cells[c] for c in f"{scale:.3g}"],
                ],
                axis=1,
            )
        except KeyError:
            return None


@functools.lru_cache(maxsize=1)
def _legend_glyphs() -> _LegendGlyphs | None:
    try:
        return _LegendGlyphs(_font())
    except ValueError:  # this Pillow or font lays text out otherwise: Pillow draws each line
        return None


@functools.lru_cache(maxsize=64)
def _legend_base_rows(width: int) -> tuple[np.ndarray, bool]:
    """(``_legend_base`` as scanlines (read-only), whether the text line's cells can be put
    into them: the rows they cover fit the strip and show only the background)."""
    rows = _scanlines(_legend_base(width))
    rows.flags.writeable = False
    glyphs = _legend_glyphs()
    fits = False
    if glyphs is not None:
        top = LEGEND_TEXT_XY[1] + glyphs.top
        under = rows[top : top + glyphs.height, 1 + 3 * LEGEND_TEXT_XY[0] :]
        fits = top >= 0 and top + glyphs.height <= LEGEND_HEIGHT and bool((under == BACKGROUND).all())
    return rows, fits


def legend_rows(width: int, p_fake: float, scale: float) -> np.ndarray:
    """The legend strip of a comparative heatmap as PNG scanlines uint8 [LEGEND_HEIGHT,
    1 + 3 * width] (filter "None"): the colour bar from real to fake, P(fake) and the map
    value the ends of the bar stand for.

    Pixel for pixel ``draw_legend_rows(width, legend_text(p_fake, scale))``, at about a
    twentieth of its cost (benchmarks/legend_bench.py): the text line is put together from
    cells Pillow drew once (``_LegendGlyphs``) and clipped at the right edge like Pillow's."""
    base, fits = _legend_base_rows(width)
    glyphs = _legend_glyphs()
    line = glyphs.line(p_fake, scale) if fits and glyphs is not None else None
    if line is None or glyphs is None:
        return draw_legend_rows(width, legend_text(p_fake, scale))
    rows = base.copy()
    x0, y0 = 1 + 3 * LEGEND_TEXT_XY[0], LEGEND_TEXT_XY[1] + glyphs.top
    n = min(line.shape[1], rows.shape[1] - x0)
    if n > 0:
        rows[y0 : y0 + glyphs.height, x0 : x0 + n] = line[:, :n]
    return rows


def comparative_png(scanlines, real, fake, p_fake: float) -> bytes:
    """The comparative heatmap file of one image: its scanlines from ``comparative_scanlines``
    (on the CPU), the legend under them, and text fields a tool can read
    (``poundcam.scale``: the map value of the ends of the scale; ``poundcam.p_fake``)."""
    a = scanlines.numpy() if isinstance(scanlines, torch.Tensor) else np.asarray(scanlines)
    scale = max(float(_to_tensor(real).max()), float(_to_tensor(fake).max()), 0.0)
    width = (a.shape[1] - 1) // 3
    rows = np.concatenate([a, legend_rows(width, p_fake, scale)])
    return _png(
        rows,
        width,
        rows.shape[0],
        8,
        2,
        {
            "poundcam.scale": repr(scale),
            "poundcam.p_fake": repr(float(p_fake)),
            "poundcam.legend": "blue: real evidence, red: fake evidence, fake - real on the shared scale",
        },
    )


# --- PNG files ----------------------------------------------------------------------------------


def _chunk(kind: bytes, data) -> bytes:
    crc = _deflate.crc32(data, _deflate.crc32(kind))
    return struct.pack(">I", len(data)) + kind + bytes(data) + struct.pack(">I", crc)


def _png(
    scanlines,
    width: int,
    height: int,
    bit_depth: int,
    colour_type: int,
    text: dict[str, str] | None = None,
    level: int = COMPRESS_LEVEL,
) -> bytes:
    parts = [
        b"\x89PNG\r\n\x1a\n",
        _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)),
    ]
    for k, v in (text or {}).items():
        parts.append(_chunk(b"tEXt", k.encode("latin-1") + b"\x00" + v.encode("latin-1")))
    parts.append(_chunk(b"IDAT", _deflate.compress(scanlines, level)))
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)


def png_rgb(scanlines: np.ndarray | torch.Tensor) -> bytes:
    """An 8-bit RGB PNG from filtered scanlines [H, 1 + 3W] (C-contiguous, on the CPU)."""
    a = scanlines.numpy() if isinstance(scanlines, torch.Tensor) else scanlines
    a = np.ascontiguousarray(a)
    return _png(a, (a.shape[1] - 1) // 3, a.shape[0], 8, 2)


def raw16_png(m) -> bytes:
    """16-bit grayscale PNG of the raw grid map; raw = value / 65535 * scale (tEXt 'poundcam.scale')."""
    a = _to_tensor(m).cpu().numpy().astype(np.float64)
    scale = float(a.max()) if a.size else 0.0
    q = np.zeros(a.shape, dtype=np.uint16) if scale <= 0 else np.round(a / scale * 65535).astype(np.uint16)
    h, w = q.shape
    rows = np.zeros((h, 1 + 2 * w), dtype=np.uint8)  # filter 0 (none), big-endian samples
    rows[:, 1:] = q.astype(">u2").view(np.uint8).reshape(h, 2 * w)
    return _png(rows, w, h, 16, 0, {"poundcam.scale": repr(scale)})


def read_raw16_png(data: bytes) -> np.ndarray:
    """Inverse of raw16_png: the raw map as float64."""
    img = Image.open(io.BytesIO(data))
    if not isinstance(img, PngImagePlugin.PngImageFile):
        raise ValueError("not a PNG file")
    scale = float(img.text.get("poundcam.scale", "0"))
    return np.asarray(img, dtype=np.float64) / 65535 * scale


def encode_heatmaps(crop_rows, original_rows, real, fake) -> dict[str, bytes]:
    """The PNG files of one image from its rendered scanlines (CPU): crop_rows [2, S, 1 + 3S],
    original_rows [2, h, 1 + 3w] or None, and the raw maps [g, g]."""
    out: dict[str, bytes] = {}
    for k, name in enumerate(MAPS):
        out[f"{name}_overlay"] = png_rgb(crop_rows[k])
        if original_rows is not None:
            out[f"{name}_overlay_original"] = png_rgb(original_rows[k])
        out[f"{name}_raw16"] = raw16_png(real if k == 0 else fake)
    return out


def render_heatmaps(
    real, fake, crop_img: Image.Image, original_img: Image.Image | None, geometry: CropGeometry
) -> dict[str, bytes]:
    """PNGs for one image: ``{real,fake}_overlay`` over the model's input crop,
    ``{real,fake}_overlay_original`` over the original image, ``{real,fake}_raw16``."""
    real, fake = _to_tensor(real).cpu(), _to_tensor(fake).cpu()
    norm = shared_normalized(real[None], fake[None])
    crop = torch.from_numpy(np.array(crop_img.convert("RGB"))).permute(2, 0, 1)[None]
    crop_rows = png_rows(blend(crop, upsample(norm, crop.shape[-2], crop.shape[-1])))[0]
    original_rows = None
    if original_img is not None:
        shown = torch.from_numpy(display_original_pil(original_img, geometry)).permute(2, 0, 1)
        original_rows = original_overlay_scanlines(real[None], fake[None], [shown], [geometry])[0]
    return encode_heatmaps(crop_rows, original_rows, real, fake)
