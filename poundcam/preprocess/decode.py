"""Safe decoding of untrusted image bytes, with hard limits.

``decode_image(data, limits)`` turns the bytes of one image into a fully loaded PIL RGB image
(EXIF orientation applied) plus what is known about the file, or raises ``ImageDecodeError``
with a stable ``code``. The checks run from cheapest to dearest, and nothing is decoded before
the declared pixel count has passed the limit:

1. byte size (``empty``, ``too_large``);
2. magic bytes: a known raster format, or recognisably something else (``not_an_image`` for
   HTML, XML, SVG, PDF, PostScript, text, archives, media; ``unsupported_format`` for raster
   formats outside ``allowed_formats``);
3. Pillow identifies the file from its header only, restricted to the sniffed format;
4. width * height against ``max_pixels``, and each side against ``MAX_IMAGE_SIDE``
   (``too_many_pixels``); Pillow's own decompression
   bomb error or warning becomes ``decompression_bomb``;
5. frame 0 is decoded (``truncated``, ``corrupt``) and converted to RGB the way the official
   test transform converts (see ``_to_rgb``), then turned upright by its EXIF orientation.

The function is safe to call from many threads at once: it changes no global Pillow setting
(``Image.MAX_IMAGE_PIXELS`` and ``ImageFile.LOAD_TRUNCATED_IMAGES`` are left alone, the pixel
limit is checked per call) and installs no warning filters. Warnings Pillow emits stay
warnings; where a filter turns one into an exception, it is mapped to a code like any error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
from collections.abc import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from poundcam.constants import (
    DECODE_ERROR_CODES,
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_IMAGE_PIXELS,
    MAX_IMAGE_SIDE,
    ErrorCode,
)
from poundcam.errors import PoundcamError
from poundcam.settings import env_name

# Register every Pillow plugin now, once, rather than lazily from worker threads.
Image.init()

# the settings that set the limits, named in the errors
ENV_MAX_BYTES = env_name("max_image_bytes")
ENV_MAX_PIXELS = env_name("max_image_pixels")

DEFAULT_ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"})

ORIENTATION_TAG = 0x0112

# EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# Pillow format names that are a member of another format's family.
_FAMILY = {"MPO": "JPEG"}


class ImageDecodeError(PoundcamError):
    """Image bytes that cannot be turned into an RGB image; ``code`` says why (one of
    ``poundcam.constants.DECODE_ERROR_CODES``)."""

    def __init__(self, code: str, message: str):
        if code not in DECODE_ERROR_CODES:
            raise ValueError(f"unknown image decode error code {code!r}")
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message

    def __reduce__(self):
        return type(self), (self.code, self.message)


@dataclasses.dataclass(frozen=True)
class DecodeLimits:
    """Hard limits for one decode.

    max_bytes: largest accepted input, in bytes (POUNDCAM_MAX_IMAGE_BYTES).
    max_pixels: largest accepted width * height of the first frame, as declared in the header
        and checked before any pixel is decoded (POUNDCAM_MAX_IMAGE_PIXELS). Pillow's own hard
        cap (2 * Image.MAX_IMAGE_PIXELS, about 179 million by default) still applies above it.
    allowed_formats: Pillow format names that may be decoded; other raster formats are
        rejected as ``unsupported_format`` without being decoded.
    """

    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    allowed_formats: frozenset[str] = DEFAULT_ALLOWED_FORMATS

    def __post_init__(self):
        for name in ("max_bytes", "max_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"DecodeLimits.{name} must be a positive integer, got {value!r}")
        if isinstance(self.allowed_formats, str):
            raise ValueError("DecodeLimits.allowed_formats must be a collection of format names")
        formats = frozenset(str(f).upper() for f in self.allowed_formats)
        if not formats:
            raise ValueError("DecodeLimits.allowed_formats must not be empty")
        object.__setattr__(self, "allowed_formats", formats)

    @classmethod
    def from_settings(cls, settings) -> DecodeLimits:
        """The limits ``settings`` set (``max_image_bytes``, ``max_image_pixels``), the
        default formats."""
        return cls(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)


@dataclasses.dataclass(frozen=True)
class DecodedImage:
    """One decoded image.

    image: fully loaded PIL image in mode RGB, frame 0, EXIF orientation applied.
    format: the file's format as Pillow names it ("JPEG", "PNG", ...; an MPO is a "JPEG").
    original_mode: Pillow's mode of frame 0 before conversion ("CMYK", "I;16", "P", ...).
    width, height: size of ``image`` (after orientation).
    n_frames: frames (or pages) in the file; only frame 0 is decoded.
    sha256: hex digest of the input bytes.
    exif_orientation: the EXIF orientation value (1..8) if the file has one, else None.
    """

    image: Image.Image
    format: str
    original_mode: str
    width: int
    height: int
    n_frames: int
    sha256: str
    exif_orientation: int | None


def decode_image(
    data: bytes,
    limits: DecodeLimits | None = None,
    before_load: Callable[[int, int, str], None] | None = None,
) -> DecodedImage:
    """Decode untrusted image bytes under ``limits``; raises ImageDecodeError on bad input.

    ``before_load(width, height, mode)``, if given, is called with the header's size and mode
    once they have passed the limits and before any pixel is decoded (to reserve memory for
    the decode, for example; see poundcam.preprocess.budget)."""
    limits = DecodeLimits() if limits is None else limits
    if not isinstance(data, bytes):
        if not isinstance(data, (bytearray, memoryview)):
            raise TypeError(f"decode_image needs bytes, got {type(data).__name__}")
        data = bytes(data)
    if not data:
        raise ImageDecodeError(ErrorCode.EMPTY, "the image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageDecodeError(
            ErrorCode.TOO_LARGE,
            f"the image is {len(data):,} bytes, over the limit of {limits.max_bytes:,} bytes "
            f"({ENV_MAX_BYTES})",
        )
    digest = hashlib.sha256(data).hexdigest()

    fmt = sniff_format(data)
    if fmt is None:
        what = describe_non_image(data)
        if what is not None:
            raise ImageDecodeError(ErrorCode.NOT_AN_IMAGE, f"not an image: the bytes look like {what}")
        image = _identify_unknown(data)
        fmt = _family(image.format)
        if fmt not in limits.allowed_formats:
            image.close()
            raise _unsupported(fmt, limits)
    else:
        if fmt not in limits.allowed_formats:
            raise _unsupported(fmt, limits)
        if fmt not in Image.OPEN:
            raise ImageDecodeError(
                ErrorCode.UNSUPPORTED_FORMAT, f"{fmt} images cannot be decoded by this installation"
            )
        image = _identify(data, fmt)

    try:
        decoded = _decode(image, data, fmt, digest, limits, before_load)
    except ImageDecodeError:
        image.close()
        raise
    except Exception as exc:  # noqa: BLE001 - every failure of untrusted input gets a code
        image.close()
        raise _classify(exc, data, fmt) from exc
    if decoded.image is not image:  # an RGB file with no turn is returned as loaded, uncopied
        image.close()
    return decoded


def _decode(
    image, data: bytes, fmt: str, digest: str, limits: DecodeLimits, before_load=None
) -> DecodedImage:
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError(ErrorCode.CORRUPT, f"{fmt} header declares an empty size {width}x{height}")
    if max(width, height) > MAX_IMAGE_SIDE:
        raise ImageDecodeError(
            ErrorCode.TOO_MANY_PIXELS,
            f"the {fmt} image declares {width}x{height}, a side over {MAX_IMAGE_SIDE:,} pixels; "
            "it was not decoded",
        )
    if width * height > limits.max_pixels:
        raise ImageDecodeError(
            ErrorCode.TOO_MANY_PIXELS,
            f"the {fmt} image declares {width}x{height} = {width * height:,} pixels, over the "
            f"limit of {limits.max_pixels:,} ({ENV_MAX_PIXELS}); it was not decoded",
        )
    n_frames = int(getattr(image, "n_frames", 1) or 1)
    if image.tell() != 0:
        image.seek(0)
    # Pillow's TIFF decoder turns the image upright while loading and drops the tag: read the
    # tag first. (Reading EXIF before loading in general would load PNGs and hide their errors.)
    tiff_tags = getattr(image, "tag_v2", None)
    declared = _as_orientation(tiff_tags.get(ORIENTATION_TAG)) if tiff_tags is not None else None
    if before_load is not None:
        before_load(width, height, image.mode)
    image.load()
    original_mode = image.mode
    orientation = _orientation(image)
    turn = _UPRIGHT.get(orientation) if orientation is not None else None
    if orientation is None:
        orientation = declared  # applied by the decoder
    rgb = _to_rgb(image)
    if turn is not None:
        rgb = rgb.transpose(turn)
        # The turned image must not carry the orientation on: turning it again would be wrong.
        for key in ("exif", "xmp", "XML:com.adobe.xmp"):
            rgb.info.pop(key, None)
    return DecodedImage(
        image=rgb,
        format=fmt,
        original_mode=original_mode,
        width=rgb.width,
        height=rgb.height,
        n_frames=n_frames,
        sha256=digest,
        exif_orientation=orientation,
    )


def _to_rgb(image: Image.Image) -> Image.Image:
    """Frame 0 as RGB, converted as the official transform's ``convert("RGB")`` converts.

    Alpha is dropped, not composited: ``convert("RGB")`` on RGBA/LA keeps the colour channels
    as stored, and the model was calibrated on images converted that way. Palette images with
    transparency go through RGBA first (Pillow's recommended path; the colours are the same and
    no warning is raised). 16-bit (and 32-bit integer) samples are scaled to 8 bits
    (v * 255 / 65535, rounded) instead of clipped, which would turn most of the image white.
    CMYK goes through Pillow's conversion (Adobe-inverted JPEGs are handled by the decoder);
    embedded ICC profiles are not applied, as in the official transform.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I"):  # I;16, I;16B, I;16L, I;16N, I
        samples = np.asarray(image).astype(np.int64)
        samples = np.clip(samples, 0, 65535)
        eight = ((samples * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(eight).convert("RGB")
    if mode == "F":
        return image.convert("L").convert("RGB")
    if mode == "PA" or (mode == "P" and "transparency" in image.info):
        return image.convert("RGBA").convert("RGB")
    if mode in ("La", "RGBa"):  # premultiplied alpha: undo it the way Pillow does
        return image.convert("RGBA" if mode == "RGBa" else "LA").convert("RGB")
    return image.convert("RGB")


def _orientation(image: Image.Image) -> int | None:
    """The EXIF orientation of the file, or None. Unreadable EXIF is treated as absent:
    it is metadata, and the pixels are still good."""
    try:
        return _as_orientation(image.getexif().get(ORIENTATION_TAG))
    except Exception:  # noqa: BLE001
        return None


def _as_orientation(value) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


# --- identification ---------------------------------------------------------------------------

_NETPBM = re.compile(rb"P[1-7Ff][\s#]")
_BMP_DIB_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}
_ISO_IMAGE_BRANDS = {
    b"avif": "AVIF",
    b"avis": "AVIF",
    b"heic": "HEIF",
    b"heix": "HEIF",
    b"heim": "HEIF",
    b"heis": "HEIF",
    b"hevc": "HEIF",
    b"hevx": "HEIF",
    b"mif1": "HEIF",
    b"msf1": "HEIF",
}


def sniff_format(data: bytes) -> str | None:
    """The raster format named by the file's magic bytes (Pillow's format names), or None."""
    head = data[:64]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith(b"BM") and (len(head) < 18 or int.from_bytes(head[14:18], "little") in _BMP_DIB_SIZES):
        return "BMP"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "TIFF"
    if head[4:8] == b"ftyp" and head[8:12] in _ISO_IMAGE_BRANDS:
        return _ISO_IMAGE_BRANDS[head[8:12]]
    if head.startswith((b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP  \r\n\x87\n")):
        return "JPEG2000"
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")):
        return "JXL"
    if (
        head[:4] in (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00")
        and len(head) >= 22
        and int.from_bytes(head[4:6], "little") > 0
        and head[9] == 0
    ):
        return "ICO" if head[2] == 1 else "CUR"
    for magic, name in (
        (b"8BPS", "PSD"),
        (b"qoif", "QOI"),
        (b"DDS ", "DDS"),
        (b"icns", "ICNS"),
        (b"\x01\xda", "SGI"),
        (b"\x59\xa6\x6a\x95", "SUN"),
        (b"BLP1", "BLP"),
        (b"BLP2", "BLP"),
        (b"\xb1\x68\xde\x3a", "DCX"),
        (b"SIMPLE  =", "FITS"),
        (b"/* XPM */", "XPM"),
    ):
        if head.startswith(magic):
            return name
    if _NETPBM.match(head):
        return "PPM"
    if head.startswith(b"#define") and b"_width" in head:
        return "XBM"
    return None


def describe_non_image(data: bytes) -> str | None:
    """What recognisably-not-an-image bytes look like ("an HTML document", ...), or None."""
    head = data[:4096]
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    stripped = head.lstrip(b" \t\r\n\f")
    lower = stripped[:1024].lower()
    if stripped.startswith(b"%PDF-"):
        return "a PDF document"
    if stripped.startswith(b"%!PS") or head.startswith(b"\xc5\xd0\xd3\xc6"):
        return "PostScript (vector graphics)"
    if lower.startswith(b"<"):
        if b"<svg" in lower:
            return "SVG (vector graphics, not a raster image)"
        if any(tag in lower for tag in (b"<!doctype html", b"<html", b"<head", b"<body")):
            return "an HTML document"
        if lower.startswith(b"<?xml"):
            return "an XML document"
        return "markup (HTML or XML)"
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive"
    if head.startswith(b"\x1f\x8b"):
        return "gzip-compressed data"
    if head[4:8] == b"ftyp":
        return "an ISO media file (video or audio)"
    if head.startswith(b"RIFF"):
        return "a RIFF file that is not WebP (audio or video)"
    if _is_text(head):
        return "text"
    return None


def _is_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut by the 4096-byte window
            return False
        text = head[: exc.start].decode("utf-8")
    if not text:
        return False
    printable = sum(1 for ch in text if ch.isprintable() or ch in "\t\n\r\f")
    return printable / len(text) >= 0.95


def _family(pillow_format: str | None) -> str:
    name = (pillow_format or "UNKNOWN").upper()
    return _FAMILY.get(name, name)


def _unsupported(fmt: str, limits: DecodeLimits) -> ImageDecodeError:
    allowed = ", ".join(sorted(limits.allowed_formats))
    return ImageDecodeError(
        ErrorCode.UNSUPPORTED_FORMAT, f"{fmt} images are not accepted (accepted: {allowed})"
    )


def _identify(data: bytes, fmt: str):
    """Open (header only) as the sniffed format, and no other."""
    try:
        return Image.open(io.BytesIO(data), formats=[fmt])
    except Exception as exc:  # noqa: BLE001
        raise _classify(exc, data, fmt) from exc


def _identify_unknown(data: bytes):
    """Bytes with no known signature that are not text: let Pillow try every format it knows,
    to name raster formats without magic bytes (TGA, PCX, ...)."""
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageDecodeError(ErrorCode.NOT_AN_IMAGE, "not an image: unrecognised binary data") from None
    except Exception as exc:  # noqa: BLE001
        error = _classify(exc, data, None)
        if error.code == ErrorCode.DECOMPRESSION_BOMB:
            raise error from exc
        raise ImageDecodeError(
            ErrorCode.NOT_AN_IMAGE, f"not an image: unrecognised binary data ({exc})"
        ) from exc


# --- error classification ---------------------------------------------------------------------


def _classify(exc: BaseException, data: bytes, fmt: str | None) -> ImageDecodeError:
    name = fmt or "image"
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ImageDecodeError(
            ErrorCode.DECOMPRESSION_BOMB, f"{name} rejected as a decompression bomb before decoding: {exc}"
        )
    text = str(exc)
    lower = text.lower()
    # PNG text/ICC chunk bombs: one chunk over Pillow's limit ("decompressed data too large")
    # or all text chunks together over MAX_TEXT_MEMORY ("too much memory used in text chunks")
    if "decompressed data too large" in lower or "too much memory used in text chunks" in lower:
        return ImageDecodeError(
            ErrorCode.DECOMPRESSION_BOMB, f"{name} rejected as a decompression bomb: {text}"
        )
    if isinstance(exc, UnidentifiedImageError):  # its text names an in-memory file object
        text = "the header cannot be parsed"
    if isinstance(exc, EOFError) or "truncated" in lower or _looks_truncated(data, fmt):
        return ImageDecodeError(
            ErrorCode.TRUNCATED, f"{name} file is truncated: {text or type(exc).__name__}"
        )
    return ImageDecodeError(ErrorCode.CORRUPT, f"{name} file is corrupt: {text or type(exc).__name__}")


def _looks_truncated(data: bytes, fmt: str | None) -> bool:
    """Whether the file visibly ends before its format says it should."""
    if fmt == "JPEG":
        last_scan = data.rfind(b"\xff\xda")
        return last_scan < 0 or data.rfind(b"\xff\xd9") < last_scan
    if fmt == "PNG":
        return data.rfind(b"IEND") < 0
    if fmt == "GIF":
        return not data.rstrip(b"\x00").endswith(b"\x3b")
    if fmt == "WEBP":
        return len(data) < 12 or int.from_bytes(data[4:8], "little") + 8 > len(data)
    if fmt == "BMP":
        if len(data) < 54:
            return True
        declared = int.from_bytes(data[2:6], "little")
        offset = int.from_bytes(data[10:14], "little")
        return offset >= len(data) or (declared > len(data))
    if fmt == "TIFF":
        if len(data) < 16:
            return True
        little = data[:2] == b"II"
        if data[2:4] in (b"*\x00", b"\x00*"):  # classic TIFF: 32-bit offset of the first IFD
            return int.from_bytes(data[4:8], "little" if little else "big") + 2 > len(data)
        return int.from_bytes(data[8:16], "little" if little else "big") + 8 > len(data)  # BigTIFF
    return False
