"""A cheap read of a JPEG's headers: size, components, coding process, EXIF orientation.

It decodes no pixels. The batched device preprocessing uses it to decide, before any decoding,
whether an input is a plain JPEG that its decoder reproduces exactly as Pillow would, and to
check the pixel limit. Anything this reader does not fully understand yields ``None``: such
inputs take the Pillow path, which owns every error message.
"""

from __future__ import annotations

import dataclasses
import struct

# Start-of-frame markers the device decoders take: baseline, extended sequential, progressive
# (Huffman coding, 8-bit). Lossless, hierarchical and arithmetic-coded frames are left to Pillow.
SOF_SUPPORTED = {0xC0: "baseline", 0xC1: "extended", 0xC2: "progressive"}
SOF_OTHER = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
STANDALONE = {0x01, *range(0xD0, 0xD8)}
EXIF_ORIENTATION_TAG = 0x0112
XMP_ID = b"http://ns.adobe.com/xap/1.0/\x00"


@dataclasses.dataclass(frozen=True)
class JpegHeader:
    width: int  # as stored (before EXIF orientation)
    height: int
    components: int  # 1 grayscale, 3 YCbCr/RGB, 4 CMYK/YCCK
    precision: int  # bits per sample
    process: str  # "baseline" | "extended" | "progressive" | "other"
    orientation: int | None  # EXIF orientation (1 when absent); None if present but unreadable
    adobe_transform: int | None  # Adobe APP14 colour transform flag, None without that segment
    complete: bool  # ends with an EOI marker (trailing zero padding allowed)
    huffman_tables: bool  # a DHT segment precedes the first scan

    @property
    def oriented_size(self) -> tuple[int, int]:
        """(width, height) after the EXIF orientation is applied (5..8 swap the axes)."""
        if self.orientation in (5, 6, 7, 8):
            return self.height, self.width
        return self.width, self.height


def is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def read_jpeg_header(data: bytes) -> JpegHeader | None:
    """Parse the marker segments up to the first scan; ``None`` if ``data`` is not a JPEG or its
    headers are malformed or truncated."""
    if not is_jpeg(data):
        return None
    n = len(data)
    i = 2
    orientation: int | None = 0  # 0: no Orientation tag seen
    exif_seen = False
    xmp_orientation = False
    adobe: int | None = None
    frame = None
    dht = False
    while i < n:
        if data[i] != 0xFF:
            return None
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            return None
        marker = data[i]
        i += 1
        if marker in STANDALONE:
            continue
        if marker in (0xD8, 0xD9):  # a second SOI, or EOI before any scan
            return None
        if i + 2 > n:
            return None
        (length,) = struct.unpack_from(">H", data, i)
        if length < 2 or i + length > n:
            return None
        seg = data[i + 2 : i + length]
        i += length
        if marker == 0xDA:  # start of scan: the headers are over
            break
        if marker == 0xC4:
            dht = True
        elif marker == 0xE1 and seg[:6] == b"Exif\x00\x00" and not exif_seen:
            exif_seen = True  # Pillow reads the first EXIF segment only
            orientation = _exif_orientation(seg[6:])
        elif marker == 0xE1 and seg.startswith(XMP_ID) and b"Orientation" in seg:
            xmp_orientation = True  # Pillow falls back to the XMP orientation: leave it to Pillow
        elif marker == 0xEE and seg[:5] == b"Adobe" and len(seg) >= 12 and adobe is None:
            adobe = seg[11]
        elif marker in SOF_SUPPORTED or marker in SOF_OTHER:
            if frame is not None or len(seg) < 6:
                return None
            precision, height, width, components = struct.unpack_from(">BHHB", seg, 0)
            frame = (width, height, components, precision, SOF_SUPPORTED.get(marker, "other"))
    else:
        return None  # no scan
    if frame is None:
        return None
    width, height, components, precision, process = frame
    if orientation == 0:
        orientation = None if xmp_orientation else 1
    complete = data.rstrip(b"\x00")[-2:] == b"\xff\xd9"
    return JpegHeader(
        width=width,
        height=height,
        components=components,
        precision=precision,
        process=process,
        orientation=orientation,
        adobe_transform=adobe,
        complete=complete,
        huffman_tables=dht,
    )


def _exif_orientation(tiff: bytes) -> int | None:
    """The Orientation tag of IFD0 in a TIFF-structured EXIF block: 0 when absent, ``None`` when
    the block cannot be read the way Pillow reads it."""
    if len(tiff) < 8:
        return None
    order = tiff[:2]
    if order == b"II":
        end = "<"
    elif order == b"MM":
        end = ">"
    else:
        return None
    (magic, ifd) = struct.unpack_from(end + "HI", tiff, 2)
    if magic != 42 or ifd + 2 > len(tiff):
        return None
    (count,) = struct.unpack_from(end + "H", tiff, ifd)
    if ifd + 2 + 12 * count > len(tiff):
        return None
    for k in range(count):
        tag, typ, cnt = struct.unpack_from(end + "HHI", tiff, ifd + 2 + 12 * k)
        if tag != EXIF_ORIENTATION_TAG:
            continue
        if typ != 3 or cnt != 1:  # anything but one SHORT: leave it to Pillow
            return None
        (value,) = struct.unpack_from(end + "H", tiff, ifd + 2 + 12 * k + 8)
        return value
    return 0
