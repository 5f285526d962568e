"""Images for the integration tests: good ones in every awkward encoding the decoder must
handle, and one file for each bad-input case, with the error code it must end with."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def photo(width: int, height: int, seed: int) -> Image.Image:
    """A deterministic RGB picture with smooth regions, edges and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [np.sin(x / (7 + c * 3 + seed % 5)) * 60 + np.cos(y / (11 + c)) * 60 + 128 for c in range(3)], axis=-1
    )
    base += rng.normal(0, 12, base.shape)
    cx, cy = rng.integers(0, width), rng.integers(0, height)
    base[(x - cx) ** 2 + (y - cy) ** 2 < (min(width, height) / 4) ** 2] = rng.integers(0, 255, 3)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def bilevel_png(width: int, height: int) -> bytes:
    """A complete, valid 1-bit PNG of ``width`` x ``height`` black pixels, streamed so that a
    huge one (a decompression bomb) costs a few KB and no memory."""
    row = b"\x00" + bytes((width + 7) // 8)
    comp = zlib.compressobj(9)
    parts = []
    block = row * 256
    for _ in range(height // 256):
        parts.append(comp.compress(block))
    parts.append(comp.compress(row * (height % 256)))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")
    )


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def good_images(seed: int = 0) -> dict[str, bytes]:
    """name -> bytes of images that must be analysed."""
    p = photo(160, 120, seed)
    frames = [photo(96, 96, seed + k) for k in range(3)]
    gray16 = (np.linspace(0, 65535, 128 * 96).reshape(96, 128)).astype(np.uint16)
    pal = p.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    pal.info["transparency"] = 0
    return {
        "photo.jpg": encode(p, "JPEG", quality=90),
        "photo.webp": encode(photo(150, 110, seed + 1), "WEBP", quality=80),
        "animated.gif": encode(
            frames[0].convert("P"),
            "GIF",
            save_all=True,
            append_images=[f.convert("P") for f in frames[1:]],
            duration=80,
            loop=0,
        ),
        "cmyk.jpg": encode(photo(120, 140, seed + 2).convert("CMYK"), "JPEG", quality=90),
        "gray16.png": encode(Image.fromarray(gray16), "PNG"),
        "palette_transparent.png": encode(pal, "PNG", transparency=0),
        "gray.jpg": encode(photo(130, 100, seed + 3).convert("L"), "JPEG", quality=85),
        "rotated_exif6.jpg": encode(photo(200, 100, seed + 4), "JPEG", exif=_exif(6)),
    }


def bad_images(seed: int = 0) -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, error code) of files that must fail, each with its code."""
    jpeg = encode(photo(160, 120, seed + 10), "JPEG", quality=90)
    png = bytearray(encode(photo(64, 64, seed + 11), "PNG"))
    # keep the signature and IHDR, break the compressed pixel stream
    idat = png.find(b"IDAT")
    png[idat + 8 : idat + 40] = bytes(range(32))
    return {
        "empty.png": (b"", "empty"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "corrupt.png": (bytes(png), "corrupt"),
        "page.html": (
            b"<!DOCTYPE html><html><head><title>x</title></head><body>hi</body></html>",
            "not_an_image",
        ),
        "notes.txt": (b"just some text, not an image at all\n" * 20, "not_an_image"),
        "drawing.svg": (
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" '
            b'width="10" height="10"><rect width="10" height="10"/></svg>',
            "not_an_image",
        ),
        "image.tga": (encode(photo(40, 30, seed + 12), "TGA"), "unsupported_format"),
        "icon.ico": (encode(photo(32, 32, seed + 13), "ICO"), "unsupported_format"),
        # 15000 x 15000 = 225 M pixels: over Pillow's hard cap, in a ~30 KB file
        "bomb.png": (bilevel_png(15000, 15000), "decompression_bomb"),
        # 7000 x 7000 = 49 M pixels: under Pillow's cap, over the worker's POUNDCAM_MAX_IMAGE_PIXELS
        "huge.png": (bilevel_png(7000, 7000), "too_many_pixels"),
    }


MAX_IMAGE_PIXELS = 40_000_000  # the workers' POUNDCAM_MAX_IMAGE_PIXELS in these tests
MAX_IMAGE_BYTES = 2_000_000  # the workers' POUNDCAM_MAX_IMAGE_BYTES in these tests


def too_large_image(seed: int = 0) -> bytes:
    """A valid PNG over MAX_IMAGE_BYTES (noise does not compress)."""
    rng = np.random.default_rng(seed)
    data = encode(Image.fromarray(rng.integers(0, 256, (900, 900, 3), dtype=np.uint8)), "PNG")
    assert len(data) > MAX_IMAGE_BYTES
    return data


def fixture_images(official_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((official_dir / "images").glob("*.png"))}
