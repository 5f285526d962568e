"""The batched device preprocessing path against the Pillow path (the model's calibration).

On this CPU-only machine the device path runs torchvision's CPU decoder and encoder: the same
code as on CUDA, with libjpeg-turbo where CUDA has nvJPEG.
"""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from poundcam.preprocess import batched as dt
from poundcam.preprocess.batched import (
    DevicePreprocessor,
    ImageDecodeFailure,
    PreprocessedItem,
    choose_path,
    iter_batches,
    orient,
    resize_crop,
    resize_crops,
)
from poundcam.preprocess.decode import DecodeLimits, decode_image
from poundcam.preprocess.transform import CLIP_STD, geometry_for, preprocess_with_geometry

ONE_LEVEL = 1 / 255 / min(CLIP_STD) + 1e-6  # one 8-bit level, normalized


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def pillow_reference(data: bytes):
    decoded = decode_image(data)
    tensor, geom, crop = preprocess_with_geometry(decoded.image)
    return tensor, geom, crop


@pytest.fixture(scope="module")
def device_pre():
    with DevicePreprocessor("cpu", threads=2, force="device") as pre:
        yield pre


@pytest.fixture(scope="module")
def pillow_pre():
    with DevicePreprocessor("cpu", threads=2, force="pillow") as pre:
        yield pre


# --- choosing the path ------------------------------------------------------------------------


def test_choose_path():
    assert choose_path("cuda", "auto") == "device"
    assert choose_path(torch.device("cuda", 1), None) == "device"
    assert choose_path("cpu", "auto") == "pillow"
    assert choose_path("cpu", "device") == "device"
    assert choose_path("cuda", "pillow") == "pillow"
    with pytest.raises(ValueError, match="auto, device, pillow"):
        choose_path("cpu", "gpu")


def test_cpu_default_is_pillow(corpus):
    data = corpus.jpeg_bytes(corpus.photo_like(300, 200))
    with DevicePreprocessor("cpu", threads=1) as pre:
        assert pre.path == "pillow"
        batch = pre.preprocess_batch([data])
    assert batch.items[0].path == "pillow" and batch.items[0].reason is None


# --- the pieces -------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_matches_pillow_transposes(orientation):
    from poundcam.preprocess.decode import _UPRIGHT

    rng = np.random.default_rng(orientation)
    arr = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    image = Image.fromarray(arr)
    if orientation in _UPRIGHT:
        image = image.transpose(_UPRIGHT[orientation])
    got = orient(torch.from_numpy(arr).permute(2, 0, 1), orientation)
    assert torch.equal(got.permute(1, 2, 0), torch.from_numpy(np.array(image)))


@pytest.mark.parametrize("exact_uint8", [True, False])
@pytest.mark.parametrize("size", [(640, 360), (360, 640), (257, 256), (150, 97), (1000, 229)])
def test_resize_crop_matches_pillow(corpus, size, exact_uint8):
    from torchvision.transforms import functional as TF

    image = corpus.photo_like(*size, seed=size[0])
    geom = geometry_for(*size)
    ref = TF.resize(
        image, [geom.resized[1], geom.resized[0]], interpolation=TF.InterpolationMode.BILINEAR, antialias=True
    )
    ref = np.asarray(
        ref.crop((geom.crop_left, geom.crop_top, geom.crop_left + 224, geom.crop_top + 224))
    ).astype(int)
    got = (
        resize_crop(torch.from_numpy(np.array(image)).permute(2, 0, 1), geom, exact_uint8=exact_uint8)
        .permute(1, 2, 0)
        .numpy()
        .astype(int)
    )
    diff = np.abs(got - ref)
    assert diff.max() <= 1
    assert (diff > 0).mean() < 0.01


def test_resize_crops_batches_equal_single_images(corpus):
    """The float form batches images of one size (CUDA's path): the same crops as one by one,
    across sizes, orientations and chunk boundaries, in input order."""
    sizes = [(640, 360), (360, 640), (640, 360), (257, 256), (640, 360), (360, 640)]
    images = [
        torch.from_numpy(np.array(corpus.photo_like(w, h, seed=i))).permute(2, 0, 1)
        for i, (w, h) in enumerate(sizes)
    ]
    geoms = [geometry_for(w, h) for w, h in sizes]
    single = [resize_crop(im, g, exact_uint8=False) for im, g in zip(images, geoms, strict=True)]
    batched = resize_crops(images, geoms, exact_uint8=False, max_pixels=2 * 640 * 360)
    assert len(batched) == len(single)
    for a, b in zip(single, batched, strict=True):
        assert torch.equal(a, b)
    exact = resize_crops(images, geoms)  # the CPU default: the uint8 form, image by image
    assert all(torch.equal(a, resize_crop(im, g)) for a, im, g in zip(exact, images, geoms, strict=True))
    assert resize_crops([], []) == []


def test_to_host_splits_what_it_joined():
    parts = [torch.arange(n, dtype=torch.uint8) for n in (5, 1, 300)]
    back = dt.to_host(parts)
    assert [t.tolist() for t in back] == [t.tolist() for t in parts]
    assert all(t.is_contiguous() for t in back) and dt.to_host([]) == []


def test_device_arithmetic_copies_no_host_data_per_batch(corpus):
    """Once its constants exist, the device path's arithmetic (tensor re-encode, batched
    resize, normalization) makes no tensor from host data: on a GPU each would be a copy that
    makes the preprocessing thread wait for everything queued on its stream."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from poundcam.preprocess.jpeg_tensor import jpeg_roundtrip_tensors
    from poundcam.preprocess.transform import normalize

    class Made(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.name() in ("aten::lift_fresh", "aten::lift_fresh_copy", "aten::lift"):
                Made.count += 1
            return func(*args, **(kwargs or {}))

    images = [
        torch.from_numpy(np.array(corpus.photo_like(w, h, seed=w))).permute(2, 0, 1)
        for w, h in ((97, 61), (64, 48))
    ]

    def arithmetic():
        rt = jpeg_roundtrip_tensors(images)
        crops = resize_crops(rt, [geometry_for(w, h) for w, h in ((97, 61), (64, 48))], exact_uint8=False)
        return normalize(torch.stack(crops).float().div_(255))

    arithmetic()  # constants made here, once per device
    with Made():
        arithmetic()
    assert Made.count == 0


# --- batches ----------------------------------------------------------------------------------


def test_mixed_format_batch(corpus, device_pre):
    photo = corpus.photo_like(320, 240, seed=3)
    plain = corpus.jpeg_bytes(photo, quality=85)
    cases = {
        "jpeg": (plain, "device"),
        "png": (encode(photo, "PNG"), "pillow"),
        "webp": (encode(photo, "WEBP", quality=90), "pillow"),
        "gif": (encode(photo.convert("P"), "GIF"), "pillow"),
        "cmyk_jpeg": (encode(photo.convert("CMYK"), "JPEG", quality=90), "pillow"),
        "gray_jpeg": (encode(photo.convert("L"), "JPEG", quality=90), "device"),
        "progressive_jpeg": (corpus.jpeg_bytes(photo, progressive=True), "device"),
        "rotated_jpeg": (corpus.jpeg_bytes(photo, orientation=6), "device"),
        "rgba_png": (encode(photo.convert("RGBA"), "PNG"), "pillow"),
        "corrupt": (b"\xff\xd8\xff\xe0 this is no jpeg", "truncated"),
        "garbage": (bytes(range(256)) * 8, "not_an_image"),
        "truncated_jpeg": (plain[: len(plain) // 2], "truncated"),
        "text": (b"hello, world\n" * 10, "not_an_image"),
        "empty": (b"", "empty"),
    }
    names = list(cases)
    batch = device_pre.preprocess_batch([cases[n][0] for n in names])
    assert len(batch) == len(names)
    ok = [it for it in batch if it.ok]
    assert batch.tensor.shape == (len(ok), 3, 224, 224)
    assert [it.row for it in ok] == list(range(len(ok)))
    for name, item in zip(names, batch.items, strict=True):
        data, expect = cases[name]
        assert item.index == names.index(name)
        if expect in ("device", "pillow"):
            assert isinstance(item, PreprocessedItem), (name, item)
            assert item.path == expect, name
            ref_tensor, ref_geom, ref_crop = pillow_reference(data)
            assert item.geometry == ref_geom, name
            diff = (batch.tensor[item.row] - ref_tensor).abs().max().item()
            assert diff <= ONE_LEVEL, (name, diff)
            crop = np.asarray(item.crop_image()).astype(int)
            assert np.abs(crop - np.asarray(ref_crop).astype(int)).max() <= 1, name
        else:
            assert isinstance(item, ImageDecodeFailure), (name, item)
            assert item.code == expect, (name, item)
            assert item.message
    rotated = batch.items[names.index("rotated_jpeg")]
    assert rotated.geometry.original == (240, 320)
    assert rotated.decoded().image.size == (240, 320)
    gray = batch.items[names.index("gray_jpeg")]
    assert gray.original_mode == "L" and gray.format == "JPEG"
    cmyk = batch.items[names.index("cmyk_jpeg")]
    assert cmyk.reason == "4-component JPEG" and cmyk.original_mode == "CMYK"


def test_same_outcome_whichever_path(corpus, device_pre, pillow_pre):
    photo = corpus.photo_like(150, 100, seed=4)
    good = corpus.jpeg_bytes(photo)

    def without(marker: bytes) -> bytes:
        out = bytearray(good)
        while (i := out.find(marker, 0, out.find(b"\xff\xda"))) >= 0:
            del out[i : i + 2 + int.from_bytes(out[i + 2 : i + 4], "big")]
        return bytes(out)

    no_quant = without(b"\xff\xdb")  # quantization tables removed: both decoders refuse it
    no_huff = without(b"\xff\xc4")  # Huffman tables removed: libjpeg falls back to the defaults
    huge = corpus.jpeg_bytes(corpus.photo_like(200, 120, seed=5))
    inputs = [good, no_quant, huge, good + b"junk after the end", no_huff]
    limits = DecodeLimits(max_pixels=200 * 119)
    with (
        DevicePreprocessor("cpu", threads=2, force="device", limits=limits) as dev,
        DevicePreprocessor("cpu", threads=2, force="pillow", limits=limits) as pil,
    ):
        a, b = dev.preprocess_batch(inputs), pil.preprocess_batch(inputs)
    assert [x.ok for x in a] == [y.ok for y in b] == [True, False, False, True, True]
    assert a.items[1].code == b.items[1].code == "corrupt"
    assert a.items[2].code == b.items[2].code == "too_many_pixels"
    assert a.items[0].path == "device"
    assert a.items[3].path == "pillow" and a.items[3].reason == "no end-of-image marker"
    assert a.items[4].path == "pillow" and a.items[4].reason == "no Huffman tables"
    assert torch.allclose(a.tensor, b.tensor, atol=ONE_LEVEL, rtol=0)


def test_device_decoder_refusal_falls_back_to_pillow(corpus, device_pre, monkeypatch):
    """nvJPEG refuses some JPEGs that Pillow reads (e.g. some progressive ones): simulated
    here by a decoder that refuses one input. The batch call fails, the others are decoded one
    by one, and the refused one joins the batch from the Pillow path."""
    inputs = [corpus.jpeg_bytes(corpus.photo_like(260, 260, seed=s)) for s in range(3)]
    refused = torch.frombuffer(bytearray(inputs[1]), dtype=torch.uint8)
    real = dt.decode_jpegs

    def picky(raw, device):
        if any(r.numel() == refused.numel() and torch.equal(r, refused) for r in raw):
            raise RuntimeError("nvjpegDecode: unsupported JPEG")
        return real(raw, device)

    monkeypatch.setattr(dt, "decode_jpegs", picky)
    batch = device_pre.preprocess_batch(inputs)
    assert [it.path for it in batch] == ["device", "pillow", "device"]
    assert "unsupported JPEG" in batch.items[1].reason
    for item, data in zip(batch, inputs, strict=True):
        ref, geom, _ = pillow_reference(data)
        assert item.geometry == geom
        assert (batch.tensor[item.row] - ref).abs().max() <= ONE_LEVEL


def test_unexpected_error_is_one_failure(corpus, device_pre, monkeypatch):
    inputs = [corpus.jpeg_bytes(corpus.photo_like(100, 100)), encode(corpus.photo_like(90, 90), "PNG")]

    def broken(image):
        raise MemoryError("simulated")

    monkeypatch.setattr(dt, "preprocess_with_geometry", broken)
    batch = device_pre.preprocess_batch(inputs)
    assert batch.items[0].ok and batch.items[0].path == "device"
    assert batch.items[1].code == "decode_failed" and "MemoryError" in batch.items[1].message


def test_geometry_equals_cpu_path_on_varied_jpegs(varied_jpegs, device_pre, pillow_pre):
    datas = [d for _, d in varied_jpegs]
    a, b = device_pre.preprocess_batch(datas), pillow_pre.preprocess_batch(datas)
    for (name, _), x, y in zip(varied_jpegs, a, b, strict=True):
        assert x.path == "device", (name, x.reason)
        assert y.path == "pillow"
        assert x.geometry == y.geometry, name
        assert x.crop_image().size == (224, 224)
    diff = (a.tensor - b.tensor).abs().max().item()
    assert diff <= ONE_LEVEL


def test_parity_budget_on_fixture(fixture_jpegs, device_pre, pillow_pre, official_model, tiny_model):
    datas = [d for _, d in fixture_jpegs]
    a, b = device_pre.preprocess_batch(datas), pillow_pre.preprocess_batch(datas)
    assert all(x.path == "device" for x in a)
    assert [x.geometry for x in a] == [y.geometry for y in b]
    assert (a.tensor - b.tensor).abs().max().item() <= ONE_LEVEL
    with torch.no_grad():
        for model in (official_model, tiny_model):
            pa = model(a.tensor).softmax(-1)[:, 1]
            pb = model(b.tensor).softmax(-1)[:, 1]
            assert (pa - pb).abs().max().item() <= 0.01


def test_original_image(corpus):
    photo = corpus.photo_like(300, 200, seed=9)
    datas = [corpus.jpeg_bytes(photo, orientation=8), encode(photo, "PNG")]
    expected = [decode_image(d).image for d in datas]
    for keep in (False, True):
        with DevicePreprocessor("cpu", threads=1, force="device", keep_originals=keep) as pre:
            batch = pre.preprocess_batch(datas)
        assert [it.path for it in batch] == ["device", "pillow"]
        for item, ref in zip(batch, expected, strict=True):
            got = item.original_image()
            assert got.mode == "RGB" and got.size == ref.size == item.geometry.original
            # on the CPU the device path's decoder gives Pillow's pixels
            assert np.array_equal(np.asarray(got), np.asarray(ref))


def test_cpu_threads_split_and_order(corpus):
    datas = [corpus.jpeg_bytes(corpus.photo_like(120 + 7 * i, 90, seed=i)) for i in range(7)]
    with DevicePreprocessor("cpu", threads=3, force="device") as pre:
        batch = pre.preprocess_batch(datas)
    assert [it.index for it in batch] == list(range(7))
    assert [it.geometry.original for it in batch] == [(120 + 7 * i, 90) for i in range(7)]


def test_empty_batch(device_pre):
    batch = device_pre.preprocess_batch([])
    assert len(batch) == 0 and batch.tensor.shape == (0, 3, 224, 224)


def test_non_bytes_is_a_type_error(device_pre):
    with pytest.raises(TypeError, match="needs bytes"):
        device_pre.preprocess_batch(["not bytes"])


# --- overlap ----------------------------------------------------------------------------------


def test_iter_batches_order_keys_and_prefetch(corpus, device_pre):
    datas = [corpus.jpeg_bytes(corpus.photo_like(100, 80, seed=i)) for i in range(7)]
    pulled = []

    def source():
        for i, d in enumerate(datas):
            pulled.append(i)
            yield f"k{i}", d

    it = iter_batches(device_pre, source(), batch_size=3, prefetch=1)
    first = next(it)
    assert first.keys == ["k0", "k1", "k2"]
    # while the first batch is held, the producer has prepared the next one ahead
    for _ in range(200):
        if len(pulled) >= 6:
            break
        threading.Event().wait(0.02)
    assert len(pulled) >= 6
    rest = list(it)
    assert [b.keys for b in rest] == [["k3", "k4", "k5"], ["k6"]]
    assert all(x.ok for b in [first, *rest] for x in b)


def test_iter_batches_source_error_after_good_batches(corpus, device_pre):
    data = corpus.jpeg_bytes(corpus.photo_like(64, 64))

    def source():
        yield "a", data
        yield "b", data
        raise OSError("listing failed")

    it = iter_batches(device_pre, source(), batch_size=2)
    assert next(it).keys == ["a", "b"]
    with pytest.raises(OSError, match="listing failed"):
        next(it)


def test_iter_batches_close_early_stops_producer(corpus, device_pre):
    data = corpus.jpeg_bytes(corpus.photo_like(64, 64))

    def endless():
        i = 0
        while True:
            yield i, data
            i += 1

    before = {t.ident for t in threading.enumerate()}
    it = iter_batches(device_pre, endless(), batch_size=2)
    next(it)
    it.close()
    leftover = [t for t in threading.enumerate() if t.name == "poundcam-prefetch" and t.ident not in before]
    assert not leftover
