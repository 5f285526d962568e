"""poundcam.preprocess.jpeg_tensor computes Pillow's JPEG re-encode and decode (libjpeg-turbo's integer
arithmetic) without a codec: equal bit for bit, for every size class, grayscale content and the
qualities that scale the tables differently; the device path gives the same crops with it as
with the codec."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from poundcam.preprocess.batched import DevicePreprocessor
from poundcam.preprocess.jpeg_tensor import (
    STD_LUMINANCE,
    jpeg_roundtrip_batch,
    jpeg_roundtrip_tensors,
    quant_table,
)


def pillow_roundtrip(image: Image.Image, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality, optimize=True)
    with Image.open(io.BytesIO(buf.getvalue())) as out:
        return np.asarray(out.convert("RGB"))


def as_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


# widths and heights: multiples of 16, of 8 only, odd, and smaller than one block
SIZES = [(64, 48), (97, 61), (37, 500), (257, 256), (64, 40), (40, 66), (1, 1), (7, 3), (16, 9), (300, 17)]


@pytest.mark.parametrize("size", SIZES)
def test_equals_pillow_bit_for_bit(corpus, size):
    image = corpus.photo_like(*size, seed=size[0] * 7 + size[1])
    got = jpeg_roundtrip_tensors([as_tensor(image)])[0]
    np.testing.assert_array_equal(got.permute(1, 2, 0).numpy(), pillow_roundtrip(image, 90))


@pytest.mark.parametrize("quality", [100, 75, 50, 20])
def test_other_qualities(corpus, quality):
    image = corpus.photo_like(120, 88, seed=quality)
    got = jpeg_roundtrip_tensors([as_tensor(image)], quality=quality)[0]
    np.testing.assert_array_equal(got.permute(1, 2, 0).numpy(), pillow_roundtrip(image, quality))


def test_gray_content_and_flat_and_extreme_images(corpus):
    gray = corpus.photo_like(90, 70, seed=3).convert("L").convert("RGB")
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8), "RGB")
    checker = np.indices((32, 48)).sum(0) % 2 * 255
    checker = Image.fromarray(checker.astype(np.uint8)).convert("RGB")
    flats = [
        Image.new("RGB", size, color)
        for size, color in (((33, 21), (0, 0, 0)), ((33, 21), (255, 255, 255)), ((8, 8), (255, 0, 0)))
    ]
    for image in (gray, noise, checker, *flats):
        got = jpeg_roundtrip_tensors([as_tensor(image)])[0]
        np.testing.assert_array_equal(got.permute(1, 2, 0).numpy(), pillow_roundtrip(image, 90))


def test_mixed_sizes_keep_their_order_and_batches_are_independent(corpus):
    images = [
        corpus.photo_like(w, h, seed=i)
        for i, (w, h) in enumerate([(64, 48), (40, 30), (64, 48), (40, 30), (64, 48)])
    ]
    tensors = [as_tensor(im) for im in images]
    out = jpeg_roundtrip_tensors(tensors, max_pixels=2 * 64 * 48)  # the 64x48 group in two chunks
    for im, got in zip(images, out, strict=True):
        np.testing.assert_array_equal(got.permute(1, 2, 0).numpy(), pillow_roundtrip(im, 90))
    alone = jpeg_roundtrip_batch(tensors[0][None])[0]
    assert torch.equal(alone, out[0])


def test_tables_and_input_checks():
    assert quant_table(STD_LUMINANCE, 90)[0].tolist() == [3, 2, 2, 3, 5, 8, 10, 12]
    assert quant_table(STD_LUMINANCE, 100).eq(1).all()
    with pytest.raises(ValueError, match="uint8"):
        jpeg_roundtrip_batch(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        jpeg_roundtrip_batch(torch.zeros(3, 8, 8, dtype=torch.uint8))


def test_device_path_with_tensor_roundtrip_equals_the_codec(varied_jpegs, fixture_jpegs):
    """On the CPU the codec is libjpeg-turbo, as in Pillow: the two round trips give the same
    crops, geometry and tensors, for every size, subsampling, orientation and gray input."""
    datas = [d for _, d in varied_jpegs + fixture_jpegs]
    with (
        DevicePreprocessor("cpu", threads=2, force="device") as codec,
        DevicePreprocessor("cpu", threads=2, force="device", roundtrip="tensor") as tensor,
    ):
        a, b = codec.preprocess_batch(datas), tensor.preprocess_batch(datas)
    assert [x.path for x in b] == ["device"] * len(datas)
    assert [x.geometry for x in a] == [x.geometry for x in b]
    assert torch.equal(a.tensor, b.tensor)


def test_unknown_roundtrip_is_refused():
    with pytest.raises(ValueError, match="roundtrip"):
        DevicePreprocessor("cpu", roundtrip="nvjpeg")
