"""The bounded transform (poundcam.preprocess.window) gives the literal transform's crop, bit for
bit, on both of its paths; Pillow's resize arithmetic is reproduced for any window; the JPEG
re-encode of a strip the official encoder refuses still gives the official pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from poundcam.preprocess import window
from poundcam.preprocess.resample import resize_window, window_inputs
from poundcam.preprocess.transform import crop_image, jpeg_roundtrip, reference_crop

# Ordinary, odd, portrait (vertical pass first in Pillow), upscaled and thin sizes; the thin
# ones stay small enough for the literal transform (its memory grows with the resized image).
SIZES = [
    (1, 1),
    (3, 2),
    (224, 224),
    (256, 256),
    (257, 300),
    (300, 257),
    (1000, 229),
    (229, 1000),
    (17, 600),
    (600, 17),
    (1920, 1080),
    (1080, 1920),
    (700, 2300),
    (2300, 700),
    (1500, 1),
    (1, 1500),
    (3000, 9),
    (9, 3000),
    (613, 611),
]


def image_of(size, seed: int) -> Image.Image:
    w, h = size
    rng = np.random.default_rng(seed)
    if seed % 2:
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([(xx * 7 + yy * 3) % 256, (xx ^ yy) % 256, ((xx // 5 + yy // 3) * 40) % 256], -1)
    a = np.clip(a + rng.integers(-20, 20, a.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(a, "RGB")


@pytest.mark.parametrize("path", ["auto", "window", "banded"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_bounded_crop_equals_the_literal_transform(size, path, monkeypatch):
    if path == "window":
        monkeypatch.setattr(window, "WINDOW_MAX_FLOPS", 1 << 62)
    elif path == "banded":
        monkeypatch.setattr(window, "WINDOW_MAX_FLOPS", 0)
        monkeypatch.setattr(window, "BAND", 48)  # several bands, margins crossing them
    for seed in (0, 1):
        image = image_of(size, seed)
        crop, geom = crop_image(image)
        ref, ref_geom = reference_crop(image)
        assert geom == ref_geom
        assert np.array_equal(np.asarray(crop), np.asarray(ref)), (size, path, seed)


def test_pillow_resize_windows_are_exact():
    rng = np.random.default_rng(0)
    for _ in range(150):
        w, h = (int(v) for v in rng.integers(1, 400, 2))
        ow, oh = (int(v) for v in rng.integers(1, 600, 2))
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        full = np.asarray(Image.fromarray(a).resize((ow, oh), Image.BILINEAR))
        x0, y0 = int(rng.integers(0, ow)), int(rng.integers(0, oh))
        x1, y1 = int(rng.integers(x0 + 1, ow + 1)), int(rng.integers(y0 + 1, oh + 1))
        bx0, by0, bx1, by1 = window_inputs((w, h), (ow, oh), (x0, y0, x1, y1))
        part = resize_window(a[by0:by1, bx0:bx1], (bx0, by0), (w, h), (ow, oh), (x0, y0, x1, y1))
        assert np.array_equal(part, full[y0:y1, x0:x1]), (w, h, ow, oh)


def _jpeg(image: Image.Image, optimize: bool) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90, optimize=optimize)
    return buf.getvalue()


def test_jpeg_roundtrip_of_strips_the_official_encoder_refuses():
    strip = image_of((16000, 9), 1)  # high detail: its JPEG is larger than Pillow's buffer
    with pytest.raises(OSError):
        _jpeg(strip, optimize=True)
    out = np.asarray(jpeg_roundtrip(strip))
    assert np.array_equal(out, np.asarray(Image.open(io.BytesIO(_jpeg(strip, optimize=False)))))
    # Huffman optimization changes the bytes, never the pixels: on images the official encoder
    # takes, both codings decode to the same pixels, and jpeg_roundtrip gives the official one
    for size, seed in (((640, 480), 1), ((300, 17), 0), ((16000, 9), 0)):
        image = image_of(size, seed)
        official = Image.open(io.BytesIO(_jpeg(image, optimize=True)))
        plain = Image.open(io.BytesIO(_jpeg(image, optimize=False)))
        assert np.array_equal(np.asarray(official), np.asarray(plain))
        assert np.array_equal(np.asarray(jpeg_roundtrip(image)), np.asarray(official))


def test_thin_strips_are_cropped_in_little_memory():
    """65000x1 would resize to 16,640,000x256 (17 GB in Pillow): the crop reads a few pixels."""
    for size in ((65000, 1), (1, 65000), (16000, 9)):
        image = image_of(size, 1)
        crop, geom = crop_image(image)
        assert crop.size == (224, 224) and geom.original == size


def test_only_a_pillow_decode_fixes_the_mmap_threshold():
    """glibc's mmap threshold (budget.return_freed_memory) is fixed when the Pillow path first
    reserves memory, not by making a preprocessor: a process that only uses the device path
    keeps glibc's reuse of its large host buffers."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import io
        from PIL import Image
        from poundcam.preprocess import budget
        from poundcam.preprocess.batched import DevicePreprocessor

        def jpeg():
            out = io.BytesIO()
            Image.new("RGB", (300, 200), (10, 120, 200)).save(out, "JPEG")
            return out.getvalue()

        with DevicePreprocessor("cpu", force="device") as pre:
            pre.preprocess_batch([jpeg()])
        print(budget.return_freed_memory.cache_info().currsize)
        with DevicePreprocessor("cpu", force="pillow") as pre:
            pre.preprocess_batch([jpeg()])
        print(budget.return_freed_memory.cache_info().currsize)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "1"]
