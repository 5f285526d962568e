"""Safe decoding: every bad input gets its code, every odd-but-valid input decodes right.

All inputs are generated here with Pillow (or by hand for malformed headers); no binary
fixtures.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import random
import struct
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps, features

from poundcam.constants import DECODE_ERROR_CODES
from poundcam.errors import PoundcamError
from poundcam.preprocess.decode import (
    DEFAULT_ALLOWED_FORMATS,
    DecodedImage,
    DecodeLimits,
    ImageDecodeError,
    decode_image,
)
from poundcam.preprocess.transform import CROP, preprocess_with_geometry

RED, GREEN, BLUE, YELLOW = (230, 20, 20), (20, 200, 20), (20, 20, 230), (230, 230, 20)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def noise(size=(96, 64), mode="RGB") -> Image.Image:
    rng = np.random.default_rng(0)
    channels = {"RGB": 3, "L": 1}[mode]
    arr = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if channels == 1 else arr)


def quadrants(size=(64, 32)) -> Image.Image:
    """Top-left red, top-right green, bottom-left blue, bottom-right yellow."""
    w, h = size
    im = Image.new("RGB", size)
    im.paste(RED, (0, 0, w // 2, h // 2))
    im.paste(GREEN, (w // 2, 0, w, h // 2))
    im.paste(BLUE, (0, h // 2, w // 2, h))
    im.paste(YELLOW, (w // 2, h // 2, w, h))
    return im


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def png_declaring(width: int, height: int, idat: bytes = b"", extra: bytes = b"") -> bytes:
    """A PNG header declaring an 8-bit grayscale width x height image, with whatever pixel data
    is given (none by default): decoding it would fail, so a size-based rejection proves the
    check ran before decoding."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = png_chunk(b"IHDR", ihdr) + extra
    if idat:
        body += png_chunk(b"IDAT", idat)
    return b"\x89PNG\r\n\x1a\n" + body + png_chunk(b"IEND", b"")


def assert_code(data: bytes, code: str, limits: DecodeLimits | None = None) -> ImageDecodeError:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, limits or DecodeLimits())
    assert info.value.code == code, str(info.value)
    assert str(info.value)  # a human message
    return info.value


def close(pixel, expected, tol=40):
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, expected, strict=True))


# --- bad input ---------------------------------------------------------------------------------


def test_empty():
    assert_code(b"", "empty")


def test_too_large_is_checked_before_anything_else():
    err = assert_code(b"<html>" + b"x" * 2000, "too_large", DecodeLimits(max_bytes=1000))
    assert "1,000" in str(err) and "POUNDCAM_MAX_IMAGE_BYTES" in str(err)
    ok = encode(noise(), "PNG")
    assert_code(ok, "too_large", DecodeLimits(max_bytes=len(ok) - 1))
    assert decode_image(ok, DecodeLimits(max_bytes=len(ok))).width == 96


@pytest.fixture
def load_calls(monkeypatch):
    """Counts ImageFile.load calls: pixel decoding."""
    calls = []
    original = ImageFile.ImageFile.load

    def spy(self):
        calls.append(self.format)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return calls


def test_too_many_pixels_rejected_before_decoding(load_calls):
    big = encode(Image.new("L", (4000, 3000), 128), "PNG")  # 12 MP of one colour: ~12 KB
    assert len(big) < 100_000
    err = assert_code(big, "too_many_pixels", DecodeLimits(max_pixels=1_000_000))
    assert "4000x3000" in str(err) and "POUNDCAM_MAX_IMAGE_PIXELS" in str(err)
    assert load_calls == []
    # A header-only PNG: decoding it would fail as truncated, so the code proves the order.
    assert_code(png_declaring(5000, 5000), "too_many_pixels", DecodeLimits(max_pixels=10**7))
    assert load_calls == []


def test_a_strip_longer_than_a_jpeg_side_is_rejected_before_decoding(load_calls):
    """Within the pixel limit, but all row bookkeeping: refused from the header alone."""
    for w, h in ((1, 20_000_000), (20_000_000, 1), (1000, 65_536)):
        err = assert_code(png_declaring(w, h), "too_many_pixels")
        assert f"{w}x{h}" in str(err) and "65,535" in str(err)
    assert load_calls == []
    assert decode_image(encode(Image.new("1", (1, 65_535)), "PNG")).height == 65_535


def test_pixel_limit_is_inclusive():
    data = encode(Image.new("RGB", (100, 50), RED), "PNG")
    assert decode_image(data, DecodeLimits(max_pixels=5000)).width == 100
    assert_code(data, "too_many_pixels", DecodeLimits(max_pixels=4999))


def test_small_file_declaring_huge_size_is_a_decompression_bomb(load_calls):
    bomb = png_declaring(30_000, 30_000)  # 900 MP in 57 bytes; over Pillow's hard cap
    before = Image.MAX_IMAGE_PIXELS
    assert_code(bomb, "decompression_bomb", DecodeLimits(max_pixels=2 * 10**9))
    assert_code(bomb, "decompression_bomb")
    assert load_calls == []
    assert before == Image.MAX_IMAGE_PIXELS


def test_pillow_bomb_warning_raised_as_error_maps_to_decompression_bomb():
    over_warning_threshold = png_declaring(10_000, 10_000)  # 100 MP: Pillow warns
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert_code(over_warning_threshold, "decompression_bomb", DecodeLimits(max_pixels=10**9))


def test_pillow_bomb_warning_is_not_a_crash():
    with pytest.warns(Image.DecompressionBombWarning):
        assert_code(png_declaring(10_000, 10_000), "too_many_pixels")


def test_compressed_text_chunk_bomb():
    text = png_chunk(b"zTXt", b"comment\x00\x00" + zlib.compress(b"\x00" * 20_000_000, 9))
    data = png_declaring(8, 8, idat=zlib.compress(b"\x00" * (8 * 9)), extra=text)
    assert len(data) < 40_000
    assert_code(data, "decompression_bomb")


def test_many_text_chunks_over_pillows_text_memory_are_a_bomb():
    # each chunk within Pillow's per-chunk limit, together over MAX_TEXT_MEMORY (64 MB)
    body = zlib.compress(b"a" * (1 << 20), 9)
    text = b"".join(png_chunk(b"zTXt", b"k%d\x00\x00" % i + body) for i in range(70))
    data = png_declaring(8, 8, idat=zlib.compress(b"\x00" * (8 * 9)), extra=text)
    assert len(data) < 100_000
    assert_code(data, "decompression_bomb")


NOT_IMAGES = {
    "html": b"<!DOCTYPE html>\n<html><head><title>404</title></head><body>Not found</body></html>",
    "html_with_bom": b"\xef\xbb\xbf  <html><body><img src='x.jpg'></body></html>",
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>',
    "svg_with_xml_declaration": b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>',
    "xml": b'<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>',
    "text": b"just some plain text, not an image at all\n" * 20,
    "utf8_text": "Grüße, ceci n'est pas une image — 画像ではありません\n".encode() * 10,
    "json": b'{"error": "not found", "status": 404}',
    "pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n",
    "postscript": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
    "random_bytes": random.Random(1234).randbytes(4096),
    "one_byte": b"\x00",
    "svgz": gzip.compress(b'<svg xmlns="http://www.w3.org/2000/svg"/>'),
}


@pytest.mark.parametrize("name", sorted(NOT_IMAGES))
def test_not_an_image(name):
    assert_code(NOT_IMAGES[name], "not_an_image")


def test_zip_is_not_an_image():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.jpg", encode(noise(), "JPEG"))
    err = assert_code(buf.getvalue(), "not_an_image")
    assert "ZIP" in str(err)


def test_svg_message_says_vector():
    assert "SVG" in str(assert_code(NOT_IMAGES["svg"], "not_an_image"))


@pytest.mark.parametrize("fmt", ["ICO", "TGA", "PCX", "PPM", "QOI", "SGI", "JPEG2000"])
def test_formats_pillow_opens_but_not_allowed_are_unsupported(fmt):
    if fmt == "JPEG2000" and not features.check("jpg_2000"):
        pytest.skip("no JPEG 2000 codec")
    data = encode(quadrants(), fmt)
    assert Image.open(io.BytesIO(data)).format in {fmt, "JPEG2000"}
    err = assert_code(data, "unsupported_format")
    assert "JPEG" in str(err)  # lists what is accepted


def test_allowed_formats_restrict_decoding():
    jpeg = encode(quadrants(), "JPEG")
    assert_code(jpeg, "unsupported_format", DecodeLimits(allowed_formats={"PNG"}))
    tga = encode(quadrants(), "TGA")  # no magic bytes: named by Pillow's header check
    assert decode_image(tga, DecodeLimits(allowed_formats={"TGA"})).format == "TGA"


def _valid_files() -> dict[str, bytes]:
    img = noise((128, 96))
    files = {
        "JPEG": encode(img, "JPEG", quality=90),
        "PNG": encode(img, "PNG"),
        "GIF": encode(img, "GIF"),
        "BMP": encode(img, "BMP"),
        "TIFF": encode(img, "TIFF"),
        "TIFF_deflate": encode(img, "TIFF", compression="tiff_deflate"),
        "WEBP": encode(img, "WEBP", quality=80),
    }
    return files


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # a cut TIFF directory
@pytest.mark.parametrize("name", sorted(_valid_files()))
@pytest.mark.parametrize("keep", [0.5, 0.95])
def test_truncated(name, keep):
    data = _valid_files()[name]
    decode_image(data)  # the whole file is fine
    assert_code(data[: int(len(data) * keep)], "truncated")


def test_truncated_in_the_header():
    jpeg = _valid_files()["JPEG"]
    assert_code(jpeg[:40], "truncated")
    png = _valid_files()["PNG"]
    assert_code(png[:20], "truncated")
    # the message says what is wrong, not which in-memory object Pillow was given
    assert str(assert_code(png[:30], "truncated")) == "PNG file is truncated: the header cannot be parsed"


def test_truncated_images_stay_disabled():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert_code(_valid_files()["JPEG"][:-200], "truncated")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_corrupt_png_header_checksum():
    data = bytearray(_valid_files()["PNG"])
    data[29] ^= 0xFF  # the IHDR CRC
    assert_code(bytes(data), "corrupt")


def test_corrupt_png_pixel_stream():
    raw = b"".join(b"\x00" + bytes(range(16)) for _ in range(16))
    good = png_declaring(16, 16, idat=zlib.compress(raw))
    assert decode_image(good).original_mode == "L"
    broken = png_declaring(16, 16, idat=b"\x78\x9c" + b"\xff" * 40)  # not a deflate stream
    assert_code(broken, "corrupt")


def test_corrupt_jpeg_header():
    data = bytearray(_valid_files()["JPEG"])
    sof = data.find(b"\xff\xc0")
    data[sof + 4 : sof + 12] = b"\xff" * 8  # nonsense frame header
    assert_code(bytes(data), "corrupt")


def test_mutated_files_only_ever_raise_image_decode_error():
    """Random byte flips and cuts of every allowed format, with every warning an error."""
    rng = random.Random(7)
    codes = set()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for data in _valid_files().values():
            for _ in range(25):
                mutated = bytearray(data)
                for _ in range(rng.randint(1, 12)):
                    mutated[rng.randrange(len(mutated))] = rng.randrange(256)
                if rng.random() < 0.3:
                    mutated = mutated[: rng.randrange(1, len(mutated))]
                try:
                    out = decode_image(bytes(mutated))
                except ImageDecodeError as exc:
                    codes.add(exc.code)
                else:
                    assert out.image.mode == "RGB"
    assert codes <= DECODE_ERROR_CODES
    assert {"truncated", "corrupt"} <= codes


def test_error_is_a_poundcam_error_and_pickles():
    err = assert_code(b"", "empty")
    assert isinstance(err, PoundcamError)
    again = pickle.loads(pickle.dumps(err))
    assert (again.code, str(again)) == ("empty", str(err))
    with pytest.raises(ValueError):
        ImageDecodeError("not_a_code", "x")


def test_non_bytes_is_a_programming_error():
    with pytest.raises(TypeError):
        decode_image("a string", DecodeLimits())
    assert decode_image(bytearray(_valid_files()["PNG"])).format == "PNG"


# --- odd but valid -----------------------------------------------------------------------------


def check_result(out: DecodedImage, data: bytes, fmt: str, mode: str, size: tuple[int, int]):
    assert out.format == fmt
    assert out.original_mode == mode
    assert out.image.mode == "RGB"
    assert out.image.size == (out.width, out.height) == size
    assert out.sha256 == hashlib.sha256(data).hexdigest()
    out.image.getpixel((0, 0))  # loaded, usable


@pytest.mark.parametrize("fmt", sorted(DEFAULT_ALLOWED_FORMATS))
def test_each_allowed_format_decodes(fmt):
    data = encode(quadrants(), fmt)
    out = decode_image(data)
    check_result(out, data, fmt, {"GIF": "P"}.get(fmt, "RGB"), (64, 32))
    assert out.n_frames == 1 and out.exif_orientation is None
    tol = 60 if fmt in ("JPEG", "WEBP") else 5
    assert close(out.image.getpixel((8, 8)), RED, tol)
    assert close(out.image.getpixel((56, 24)), YELLOW, tol)


def test_cmyk_jpeg_gives_expected_rgb():
    cmyk = Image.new("CMYK", (64, 64), (0, 255, 255, 0))  # pure red in CMYK
    cmyk.paste((255, 0, 255, 0), (32, 0, 64, 64))  # pure green
    data = encode(cmyk, "JPEG", quality=95)
    out = decode_image(data)
    check_result(out, data, "JPEG", "CMYK", (64, 64))
    assert close(out.image.getpixel((10, 32)), (255, 0, 0), 30)
    assert close(out.image.getpixel((54, 32)), (0, 255, 0), 30)


def test_16bit_grayscale_keeps_its_gradient():
    ramp = np.linspace(0, 65535, 256).round().astype(np.uint16)
    arr = np.tile(ramp, (32, 1))
    data = encode(Image.fromarray(arr), "PNG")
    out = decode_image(data)
    check_result(out, data, "PNG", "I;16", (256, 32))
    row = np.asarray(out.image)[0]
    assert (row[:, 0] == row[:, 1]).all() and (row[:, 1] == row[:, 2]).all()
    values = row[:, 0].astype(int)
    assert values[0] == 0 and values[-1] == 255
    assert (np.diff(values) >= 0).all()
    assert len(np.unique(values)) > 200  # a gradient, not a clipped white block
    assert abs(values[128] - 128) <= 1
    assert (Image.fromarray(arr).convert("RGB").getpixel((128, 0))[0]) == 255  # what clipping gives


def test_16bit_tiff():
    arr = np.full((16, 16), 32896, dtype=np.uint16)  # 128 * 257
    data = encode(Image.fromarray(arr), "TIFF")
    out = decode_image(data)
    assert out.original_mode.startswith("I;16")
    assert out.image.getpixel((3, 3)) == (128, 128, 128)


def test_palette_with_transparency_converts_through_rgba():
    pal = Image.new("P", (32, 32), 1)
    pal.putpalette([0, 0, 255] + [255, 0, 0] + [0, 0, 0] * 254)
    pal.paste(0, (0, 0, 16, 32))
    data = encode(pal, "PNG", transparency=0)  # index 0 (blue) is transparent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = decode_image(data)
    check_result(out, data, "PNG", "P", (32, 32))
    # Alpha dropped, as convert("RGB") does: the transparent pixels keep their stored colour.
    assert out.image.getpixel((4, 4)) == (0, 0, 255)
    assert out.image.getpixel((28, 4)) == (255, 0, 0)


def test_palette_with_per_entry_alpha():
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([10, 20, 30, 40, 50, 60] + [0, 0, 0] * 254)
    data = encode(pal, "PNG", transparency=b"\x80\xff")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = decode_image(data)
    assert out.image.getpixel((0, 0)) == (10, 20, 30)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_dropped_like_the_official_transform(mode):
    base = Image.new("RGBA", (16, 16), (200, 100, 50, 0))  # fully transparent, colour kept
    im = base if mode == "RGBA" else base.convert("LA")
    data = encode(im, "PNG")
    out = decode_image(data)
    check_result(out, data, "PNG", mode, (16, 16))
    assert out.image.getpixel((5, 5)) == Image.open(io.BytesIO(data)).convert("RGB").getpixel((5, 5))
    assert out.image.getpixel((5, 5)) != (255, 255, 255)  # not composited on white


@pytest.mark.parametrize("mode", ["L", "1"])
def test_grayscale_and_bilevel(mode):
    im = Image.new("L", (20, 10), 0)
    im.paste(255, (10, 0, 20, 10))
    data = encode(im.convert(mode), "PNG")
    out = decode_image(data)
    check_result(out, data, "PNG", mode, (20, 10))
    assert out.image.getpixel((2, 2)) == (0, 0, 0)
    assert out.image.getpixel((15, 2)) == (255, 255, 255)


def test_grayscale_jpeg():
    data = encode(Image.new("L", (16, 16), 90), "JPEG")
    out = decode_image(data)
    check_result(out, data, "JPEG", "L", (16, 16))
    r, g, b = out.image.getpixel((8, 8))
    assert r == g == b and abs(r - 90) <= 2


def _frames():
    return [Image.new("RGB", (40, 30), c) for c in (RED, BLUE, GREEN)]


def test_animated_gif_gives_frame_zero():
    first, *rest = _frames()
    data = encode(first, "GIF", save_all=True, append_images=rest, duration=100, loop=0)
    out = decode_image(data)
    assert out.format == "GIF" and out.n_frames == 3 and out.image.size == (40, 30)
    assert close(out.image.getpixel((20, 15)), RED, 10)


def test_animated_png_gives_frame_zero():
    first, *rest = _frames()
    data = encode(first, "PNG", save_all=True, append_images=rest, duration=100)
    out = decode_image(data)
    assert out.format == "PNG" and out.n_frames == 3
    assert out.image.getpixel((20, 15)) == RED


def test_animated_webp_gives_frame_zero():
    first, *rest = _frames()
    data = encode(first, "WEBP", save_all=True, append_images=rest, duration=100, lossless=True)
    out = decode_image(data)
    assert out.format == "WEBP" and out.n_frames == 3
    assert close(out.image.getpixel((20, 15)), RED, 10)


def test_multipage_tiff_gives_page_zero():
    first, *rest = _frames()
    data = encode(first, "TIFF", save_all=True, append_images=rest)
    out = decode_image(data)
    assert out.format == "TIFF" and out.n_frames == 3
    assert out.image.getpixel((20, 15)) == RED


def test_mpo_is_a_jpeg_decoded_at_its_primary_image():
    first, second, _ = _frames()
    data = encode(first, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    out = decode_image(data)
    assert out.format == "JPEG" and out.n_frames == 2
    assert close(out.image.getpixel((20, 15)), RED, 20)


# Display corners (top-left, top-right, bottom-left, bottom-right) for each EXIF orientation,
# given stored corners R, G, B, Y (see quadrants()), per the EXIF specification.
ORIENTED = {
    1: (RED, GREEN, BLUE, YELLOW),
    2: (GREEN, RED, YELLOW, BLUE),
    3: (YELLOW, BLUE, GREEN, RED),
    4: (BLUE, YELLOW, RED, GREEN),
    5: (RED, BLUE, GREEN, YELLOW),
    6: (BLUE, RED, YELLOW, GREEN),
    7: (YELLOW, GREEN, BLUE, RED),
    8: (GREEN, YELLOW, RED, BLUE),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTED))
def test_exif_orientation_is_applied(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(quadrants((64, 32)), "JPEG", quality=95, exif=exif)
    out = decode_image(data)
    assert out.exif_orientation == orientation
    size = (64, 32) if orientation <= 4 else (32, 64)
    check_result(out, data, "JPEG", "RGB", size)
    w, h = size
    corners = [out.image.getpixel(p) for p in ((3, 3), (w - 4, 3), (3, h - 4), (w - 4, h - 4))]
    for got, want in zip(corners, ORIENTED[orientation], strict=True):
        assert close(got, want, 40), (orientation, corners)
    assert ImageOps.exif_transpose(out.image).size == size  # not turned a second time


def test_tiff_orientation_tag_is_applied():
    data = encode(quadrants((64, 32)), "TIFF", tiffinfo={0x0112: 6})
    out = decode_image(data)
    assert out.exif_orientation == 6 and out.image.size == (32, 64)
    assert out.image.getpixel((3, 3)) == BLUE


def test_decoded_image_feeds_the_official_transform():
    for data in (
        encode(quadrants((300, 200)), "JPEG"),
        encode(Image.fromarray(np.tile(np.arange(0, 65536, 128, dtype=np.uint16), (100, 1))), "PNG"),
    ):
        out = decode_image(data)
        tensor, geometry, crop = preprocess_with_geometry(out.image)
        assert tensor.shape == (3, CROP, CROP)
        assert geometry.original == (out.width, out.height)
        assert crop.size == (CROP, CROP)


def test_concurrent_decoding_matches_serial():
    inputs = (
        list(_valid_files().values())
        + [
            b"",
            b"<html></html>",
            _valid_files()["JPEG"][:500],
            encode(quadrants(), "ICO"),
            encode(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG"),
        ]
        + [encode(quadrants(), "JPEG", exif=_exif(o)) for o in range(1, 9)]
    )
    inputs = inputs * 4

    def run(data):
        try:
            out = decode_image(data)
            return out.sha256, out.image.size, hashlib.sha256(out.image.tobytes()).hexdigest()
        except ImageDecodeError as exc:
            return exc.code

    serial = [run(d) for d in inputs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(run, inputs)) == serial


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


# --- limits ------------------------------------------------------------------------------------


def test_limits_defaults_and_validation():
    limits = DecodeLimits()
    assert limits.max_bytes > 1_000_000 and limits.max_pixels > 1_000_000
    assert limits.allowed_formats == frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
    assert DecodeLimits(allowed_formats=["png", "jpeg"]).allowed_formats == {"PNG", "JPEG"}
    for bad in (
        dict(max_bytes=0),
        dict(max_pixels=-1),
        dict(max_bytes=1.5),
        dict(allowed_formats=()),
        dict(allowed_formats="PNG"),
    ):
        with pytest.raises(ValueError):
            DecodeLimits(**bad)


def test_limits_from_settings():
    from poundcam.settings import Settings, SettingsError

    limits = DecodeLimits.from_settings(
        Settings.from_env({"POUNDCAM_MAX_IMAGE_BYTES": "1000", "POUNDCAM_MAX_IMAGE_PIXELS": "2_000"})
    )
    assert (limits.max_bytes, limits.max_pixels) == (1000, 2000)
    assert DecodeLimits.from_settings(Settings.from_env({})) == DecodeLimits()
    with pytest.raises(SettingsError, match="POUNDCAM_MAX_IMAGE_PIXELS"):
        Settings.from_env({"POUNDCAM_MAX_IMAGE_PIXELS": "lots"})
