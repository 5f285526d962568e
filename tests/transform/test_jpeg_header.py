"""The cheap JPEG header read that decides which inputs the device path may take."""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from poundcam.preprocess.jpeg_header import read_jpeg_header


def jpeg(image: Image.Image, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", **options)
    return buf.getvalue()


def test_baseline_colour(corpus):
    h = read_jpeg_header(jpeg(corpus.photo_like(123, 45)))
    assert (h.width, h.height, h.components, h.precision) == (123, 45, 3, 8)
    assert h.process == "baseline" and h.orientation == 1 and h.complete
    assert h.oriented_size == (123, 45)


def test_progressive_grayscale_and_cmyk(corpus):
    assert read_jpeg_header(jpeg(corpus.photo_like(40, 30), progressive=True)).process == "progressive"
    assert read_jpeg_header(jpeg(corpus.photo_like(40, 30).convert("L"))).components == 1
    cmyk = read_jpeg_header(jpeg(corpus.photo_like(40, 30).convert("CMYK")))
    assert cmyk.components == 4 and cmyk.adobe_transform is not None


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation(corpus, orientation):
    data = corpus.jpeg_bytes(corpus.photo_like(40, 30), orientation=orientation)
    h = read_jpeg_header(data)
    assert h.orientation == orientation
    assert h.oriented_size == ((30, 40) if orientation >= 5 else (40, 30))


def test_orientation_pillow_reads_differently_is_unknown(corpus):
    # an Orientation stored as a LONG: not what this reader vouches for -> None (Pillow decides)
    entry = struct.pack("<HHII", 0x0112, 4, 1, 6)  # type LONG
    raw = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<IH", 8, 1) + entry + b"\x00" * 4
    data = jpeg(corpus.photo_like(40, 30), exif=raw)
    assert read_jpeg_header(data).orientation is None
    with Image.open(io.BytesIO(data)) as im:
        assert im.getexif().get(0x0112) == 6  # Pillow does read it


def test_xmp_orientation_is_unknown(corpus):
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description '
        b'tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
    )
    data = jpeg(corpus.photo_like(40, 30), xmp=xmp)
    assert read_jpeg_header(data).orientation is None


def test_truncated_and_trailing_data(corpus):
    data = jpeg(corpus.photo_like(64, 64))
    assert not read_jpeg_header(data[:-100]).complete
    assert read_jpeg_header(data + b"\x00" * 7).complete
    assert not read_jpeg_header(data + b"trailing").complete


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xd8",
        b"\xff\xd8\xff",
        b"not a jpeg at all",
        b"\xff\xd8\xff\xe0\x00\x10JFIF",
        b"\x89PNG\r\n\x1a\n" + b"\0" * 30,
        b"\xff\xd8\xff\xd9",
        b"\xff\xd8\xff\xc0\x00\x03\x08",
    ],
)
def test_malformed_is_none(data):
    assert read_jpeg_header(data) is None


def test_header_cut_inside_a_segment(corpus):
    data = jpeg(corpus.photo_like(64, 64))
    sos = data.find(b"\xff\xda")
    for cut in range(2, sos, 7):
        assert read_jpeg_header(data[:cut]) is None
