"""The pictures of a report: where an item's images come from, and how they are made small.

A :class:`Picture` is what a panel shows (a ``src`` for an ``<img>``); an
:class:`Unavailable` says why a panel has no picture. Two sources make them:

- :class:`EmbeddedImages` reads the bytes (a stored heatmap by key, an original by its URI)
  and embeds a compressed thumbnail as a ``data:`` URI, so that the file opens anywhere,
  offline, and a 1,000-item job stays a few tens of MB (WebP at reduced size instead of the
  stored PNGs at 0.6-0.8 MB per item);
- :class:`LinkedImages` references the images by URL (presigned S3 URLs), checked to be
  http(s) or file URLs.

Originals are untrusted bytes: they are decoded by ``poundcam.preprocess.decode`` under the
same limits as the analysis.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

URL_SCHEMES = ("https", "http", "file")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Picture:
    """An image a panel shows: ``src`` for an ``<img>``, its size when known."""

    src: str
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class Unavailable:
    """Why a panel has no picture: ``reason`` for people, ``code`` for tools."""

    reason: str
    code: str = "unavailable"


@dataclass(frozen=True)
class ThumbnailSpec:
    """How embedded images are made small: a size, a WebP quality, and a byte budget per
    picture that keeps a 1,000-item page under 30 MB whatever the images hold (detailed or
    noisy images are encoded again smaller until they fit).

    Attributes:
        heatmap_side: longest side of an embedded overlay (224: the crop at full size).
        original_side: longest side of an embedded original.
        map_side: side of a map drawn alone (smooth: little is lost below the crop's size).
        quality: WebP quality of the first try, 0-100.
        heatmap_budget: bytes an overlay may take; the original's budget is
            ``original_budget``, a map's ``map_budget``.
    """

    heatmap_side: int = 224
    original_side: int = 256
    map_side: int = 112
    quality: int = 50
    heatmap_budget: int = 5_200
    original_budget: int = 6_200
    map_budget: int = 1_000


# Tries after the first, when a picture exceeds its budget: (scale of the side, quality).
_SMALLER = ((1.0, 35), (0.8, 30), (0.6, 25), (0.45, 20))


def _webp(image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="WEBP", quality=quality, method=4)
    return buf.getvalue()


def _fitted(image, quality: int, budget: int) -> Picture:
    """``image`` as a WebP data URI of at most ``budget`` bytes if any try gets there (the
    smallest try otherwise)."""
    data, shown = _webp(image, quality), image
    for scale, q in _SMALLER:
        if len(data) <= budget:
            break
        shown = (
            image
            if scale == 1.0
            else image.resize(
                (max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample=3
            )
        )  # bicubic
        data = _webp(shown, q)
    src = "data:image/webp;base64," + base64.b64encode(data).decode("ascii")
    return Picture(src, shown.width, shown.height)


class EmbeddedImages:
    """Thumbnails embedded as ``data:`` URIs.

    Args:
        fetch_heatmap: ``key -> PNG bytes`` of a stored heatmap.
        fetch_original: ``uri -> bytes`` of an item's source image; None: originals are not
            shown (each original panel says so).
        spec: thumbnail sizes and quality.
        limits: decode limits of originals (default: the analysis defaults).
    """

    def __init__(
        self,
        fetch_heatmap: Callable[[str], bytes],
        fetch_original: Callable[[str], bytes] | None = None,
        spec: ThumbnailSpec | None = None,
        limits=None,
    ):
        self.fetch_heatmap, self.fetch_original = fetch_heatmap, fetch_original
        self.spec = spec or ThumbnailSpec()
        self.limits = limits

    def heatmap(self, key: str) -> Picture | Unavailable:
        from PIL import Image

        data = self.fetch_heatmap(key)
        if not isinstance(data, (bytes, bytearray)) or bytes(data[:8]) != PNG_SIGNATURE:
            return Unavailable("not a PNG file", "not_a_png")
        try:
            with Image.open(io.BytesIO(bytes(data)), formats=["PNG"]) as png:
                im = png.convert("RGB")
        except Exception as exc:  # noqa: BLE001 - a damaged file is shown as such
            return Unavailable(f"unreadable PNG ({type(exc).__name__})", "not_a_png")
        im.thumbnail((self.spec.heatmap_side, self.spec.heatmap_side))
        return _fitted(im, self.spec.quality, self.spec.heatmap_budget)

    def maps(self, real_key: str, fake_key: str) -> dict[str, Picture | Unavailable]:
        """The two raw maps alone, in the overlays' colours on their shared scale, without
        the image beneath (a map over a saturated image can be hard to see): ``{"real_map",
        "fake_map"}``."""
        try:
            real, fake = (read_raw_map(self.fetch_heatmap(k)) for k in (real_key, fake_key))
        except Exception as exc:  # noqa: BLE001 - shown in the panel
            why = Unavailable(f"raw map unreadable ({exc})", getattr(exc, "code", "not_a_png"))
            return {"real_map": why, "fake_map": why}
        scale = max(float(real.max(initial=0.0)), float(fake.max(initial=0.0)))
        return {"real_map": self._map_picture(real, scale), "fake_map": self._map_picture(fake, scale)}

    def _map_picture(self, m, scale: float) -> Picture:
        return _fitted(colour_map(m, scale, self.spec.map_side), self.spec.quality, self.spec.map_budget)

    def original(self, uri: str) -> Picture | Unavailable:
        from ..preprocess.decode import ImageDecodeError, decode_image

        if self.fetch_original is None:
            return Unavailable("the original is not readable here", "not_configured")
        try:
            decoded = decode_image(self.fetch_original(uri), self.limits)
        except ImageDecodeError as exc:
            return Unavailable(str(exc), exc.code)
        im = decoded.image
        im.draft("RGB", (self.spec.original_side, self.spec.original_side))
        im.thumbnail((self.spec.original_side, self.spec.original_side))
        return _fitted(im, self.spec.quality, self.spec.original_budget)


def read_raw_map(data: bytes):
    """A raw map from its 16-bit PNG (``poundcam.cam.render.raw16_png``): float64 values,
    ``sample / 65535 * scale`` with the scale from the file's ``poundcam.scale`` text."""
    import numpy as np
    from PIL import Image, PngImagePlugin

    if not isinstance(data, (bytes, bytearray)) or bytes(data[:8]) != PNG_SIGNATURE:
        raise ValueError("not a PNG file")
    with Image.open(io.BytesIO(bytes(data)), formats=["PNG"]) as img:
        if not isinstance(img, PngImagePlugin.PngImageFile):  # formats=["PNG"] opens no other
            raise ValueError("not a PNG file")
        if img.width * img.height > 1 << 16:
            raise ValueError(f"a {img.width} x {img.height} raw map is not a patch grid")
        scale = float(img.text.get("poundcam.scale", "nan"))
        values = np.asarray(img, dtype=np.float64)
    if not np.isfinite(scale) or scale < 0:
        raise ValueError("raw map without a valid poundcam.scale")
    return values / 65535 * scale


def colour_map(m, scale: float, side: int):
    """An RGB image of a map alone: ``m / scale`` through the overlays' ramp
    (poundcam.cam.colormap), upsampled bilinearly to ``side`` x ``side`` for display."""
    import numpy as np
    from PIL import Image

    from ..cam.colormap import RAMP

    v = np.zeros(m.shape, dtype=np.float32) if scale <= 0 else (m / scale).astype(np.float32)
    v = np.asarray(
        Image.fromarray(np.clip(v, 0, 1), mode="F").resize((side, side), Image.Resampling.BILINEAR)
    )
    ramp = np.array(RAMP)
    rgb = np.stack([np.interp(v, ramp[:, 0], ramp[:, c]) for c in (1, 2, 3)], axis=-1)
    return Image.fromarray((rgb * 255).round().astype(np.uint8), mode="RGB")


def checked_url(url: str) -> Picture | Unavailable:
    """A URL as a Picture if its scheme is one a report may load, else Unavailable."""
    scheme = urlparse(url).scheme.lower() if isinstance(url, str) else ""
    if scheme not in URL_SCHEMES:
        return Unavailable(f"refused an image URL with scheme {scheme or 'none'!r}", "refused_url")
    return Picture(url)


class LinkedImages:
    """Images referenced by URL.

    Args:
        heatmap_url: ``key -> URL`` of a stored heatmap (a presigned URL).
        original_url: ``uri -> URL`` of an item's source image; None: not shown.
    """

    def __init__(self, heatmap_url: Callable[[str], str], original_url: Callable[[str], str] | None = None):
        self.heatmap_url, self.original_url = heatmap_url, original_url

    def heatmap(self, key: str) -> Picture | Unavailable:
        return checked_url(self.heatmap_url(key))

    def maps(self, real_key: str, fake_key: str) -> dict[str, Picture | Unavailable]:
        why = Unavailable("maps alone are drawn in embedded reports only", "not_embedded")
        return {"real_map": why, "fake_map": why}

    def original(self, uri: str) -> Picture | Unavailable:
        if self.original_url is None:
            return Unavailable("the original is not readable here", "not_configured")
        return checked_url(self.original_url(uri))
