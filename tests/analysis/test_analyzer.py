"""Analyzer end to end on the CPU, on both preprocessing paths: results, failures with their
codes, input order, batching, the out-of-memory split and rendering."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from poundcam.analysis import AnalysisOptions, Analyzer
from poundcam.cam.ondemand import render_maps, source_view
from poundcam.cam.render import LEGEND_HEIGHT, MAX_ORIGINAL_SIDE, display_size, heatmap_width
from poundcam.preprocess.transform import geometry_for

HEATMAPS = {"comparative"}  # the one file per image; the rest is drawn from the stored maps


def _scene(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * (3 + c) + y * (5 - c)) % 256 for c in range(3)], -1).astype(np.int16)
    noise = rng.integers(-20, 21, base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def inputs(official_dir) -> list[tuple[str, bytes | BaseException]]:
    """A mixed batch: JPEGs (one with an EXIF rotation, one grayscale), PNGs, a fixture image,
    corrupt and non-image bytes, a fetch failure."""
    exif = Image.Exif()
    exif[0x0112] = 6
    fetch_error = RuntimeError("the store said no")
    fetch_error.code = "not_found"
    return [
        ("jpeg", _encode(_scene(320, 240, 0), "JPEG", quality=92)),
        ("corrupt", b"\xff\xd8\xff\xe0" + b"\x00" * 40),
        ("png", _encode(_scene(200, 300, 1), "PNG")),
        ("rotated", _encode(_scene(300, 180, 2), "JPEG", quality=90, exif=exif.tobytes())),
        ("fetch", fetch_error),
        ("text", b"<html>not an image</html>"),
        ("fixture", (official_dir / "images" / "img0.png").read_bytes()),
        ("gray", _encode(_scene(260, 260, 3).convert("L"), "JPEG", quality=85)),
        ("empty", b""),
        ("jpeg2", _encode(_scene(640, 360, 4), "JPEG", quality=95)),
    ]


EXPECTED_FAILURES = {"corrupt", "fetch", "text", "empty"}


def _run(model, inputs, **opts) -> list:
    options = AnalysisOptions(**{"batch_size": 3, "decode_threads": 2, **opts})
    with Analyzer(model, options, device="cpu") as analyzer:
        return list(analyzer.analyze(inputs))


@pytest.fixture(scope="module")
def outcomes(official_model, inputs):
    return {path: _run(official_model, inputs, preprocess=path) for path in ("pillow", "device")}


def _png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


@pytest.mark.parametrize("path", ["pillow", "device"])
def test_mixed_batch_in_order_with_codes(outcomes, inputs, path):
    out = outcomes[path]
    assert [o.key for o in out] == [k for k, _ in inputs]
    by_key = {o.key: o for o in out}
    assert {k for k, o in by_key.items() if not o.ok} == EXPECTED_FAILURES
    assert by_key["fetch"].error_code == "not_found"
    assert by_key["fetch"].error_message == "the store said no"
    assert by_key["empty"].error_code == "empty"
    assert by_key["text"].error_code == "not_an_image"
    for key in ("corrupt", "text", "empty"):
        o = by_key[key]
        assert o.error_code and o.error_message and o.sha256 and o.result is None
    for key, _ in inputs:
        o = by_key[key]
        if not o.ok:
            continue
        r = o.result
        assert r.sha256 == o.sha256 and len(r.sha256) == 64
        assert 0.0 <= r.p_fake <= 1.0
        assert r.label == ("fake" if r.p_fake >= 0.5 else "real")
        assert r.geometry == geometry_for(r.width, r.height).to_dict()
        assert set(r.heatmaps) == HEATMAPS
        assert set(r.stats) >= {"real", "fake", "comparative", "grid", "layer", "target"}
        assert set(r.timings) == {"decode_s", "compute_s", "render_s"}
    assert by_key["rotated"].result.width == 180 and by_key["rotated"].result.height == 300
    assert by_key["jpeg"].result.image_format == "JPEG"
    assert by_key["png"].result.image_format == "PNG"
    assert by_key["gray"].result.original_mode == "L"


def test_both_paths_agree(outcomes):
    pil, dev = outcomes["pillow"], outcomes["device"]
    for a, b in zip(pil, dev, strict=True):
        assert a.key == b.key and a.ok == b.ok and a.error_code == b.error_code and a.sha256 == b.sha256
        if not a.ok:
            continue
        ra, rb = a.result.record(), b.result.record()
        assert set(ra) == set(rb)
        for field in (
            "sha256",
            "image_format",
            "width",
            "height",
            "original_mode",
            "geometry",
            "model_id",
            "cam_config_id",
            "threshold",
        ):
            assert ra[field] == rb[field], field
        assert abs(ra["p_fake"] - rb["p_fake"]) <= 0.01
        assert set(a.result.heatmaps) == set(b.result.heatmaps)
        for name in HEATMAPS:
            assert _png(a.result.heatmaps[name]).size == _png(b.result.heatmaps[name]).size


def test_matches_the_model_and_cam_directly(official_model, outcomes, inputs):
    """The Pillow-path results are the model's own numbers on the official transform."""
    from poundcam.cam import ComparativeCAM
    from poundcam.cam.stats import compute_stats
    from poundcam.preprocess.decode import decode_image
    from poundcam.preprocess.transform import preprocess

    res = ComparativeCAM(official_model, method=AnalysisOptions().cam_method).attribute(
        torch.stack([preprocess(decode_image(d).image) for k, d in inputs if k in ("jpeg", "png")])
    )
    got = {o.key: o.result for o in outcomes["pillow"]}
    for i, key in enumerate(("jpeg", "png")):
        assert got[key].p_fake == pytest.approx(float(res.probs[i, 1]), abs=1e-5)
        assert got[key].real_map.dtype == np.float32
        assert np.allclose(got[key].real_map, res.real[i].numpy(), rtol=1e-5, atol=1e-7)
        assert np.allclose(got[key].fake_map, res.fake[i].numpy(), rtol=1e-5, atol=1e-7)
        direct = compute_stats(res.real[i], res.fake[i], geometry_for(got[key].width, got[key].height))
        assert got[key].stats["fake"]["peak_cell"] == direct["fake"]["peak_cell"]
        assert got[key].stats["comparative"]["fake_share"] == pytest.approx(
            direct["comparative"]["fake_share"], abs=1e-4
        )


def test_overlays_sizes_and_modes(outcomes, inputs):
    r = next(o.result for o in outcomes["device"] if o.key == "jpeg2")
    geom = geometry_for(r.width, r.height)
    img = _png(r.heatmaps["comparative"])
    w, h = display_size(geom)
    assert img.size == (heatmap_width(geom), h + LEGEND_HEIGHT) and img.mode == "RGB"
    assert max(w, h) <= MAX_ORIGINAL_SIDE
    drawn = render_maps(r.real_map, r.fake_map, source_view(dict(inputs)["jpeg2"]), r.p_fake)
    for name in ("real_overlay", "fake_overlay"):
        img = _png(drawn[name])
        assert img.size == (224, 224) and img.mode == "RGB"
    for name in ("real_overlay_original", "fake_overlay_original"):
        img = _png(drawn[name])
        assert img.size == display_size(geom) and img.mode == "RGB"
    grid = r.stats["grid"]
    assert r.fake_map.shape == (grid, grid)
    assert _png(drawn["fake_raw16"]).size == (grid, grid)


def test_crop_overlay_is_the_models_input_where_no_evidence(official_model, inputs):
    """Where a map is zero the crop overlay shows the model's crop unchanged (the crop pixels
    are recovered from the normalized input)."""
    from poundcam.preprocess.decode import decode_image
    from poundcam.preprocess.transform import preprocess_with_geometry

    data = dict(inputs)["png"]
    (o,) = _run(official_model, [("png", data)], preprocess="pillow")
    _, _, crop = preprocess_with_geometry(decode_image(data).image)
    for name in ("real", "fake"):
        grid = getattr(o.result, f"{name}_map")
        if grid.max() > 0 and (grid == 0).any():
            break
    else:
        pytest.skip("no map with both zero and non-zero cells")
    files = render_maps(o.result.real_map, o.result.fake_map, source_view(data), o.result.p_fake)
    drawn = np.asarray(_png(files[f"{name}_overlay"]), dtype=np.int32)
    base = np.asarray(crop, dtype=np.int32)
    cell = 224 // grid.shape[0]
    # a zero cell whose neighbours are zero too (bilinear upsampling reaches them) is drawn
    # as the crop itself
    padded = np.pad(grid, 1, mode="edge")
    for i, j in zip(*np.nonzero(grid == 0), strict=True):
        if padded[i : i + 3, j : j + 3].max() == 0:
            ys, xs = slice(i * cell, (i + 1) * cell), slice(j * cell, (j + 1) * cell)
            assert np.array_equal(drawn[ys, xs], base[ys, xs])
    assert np.abs(drawn - base).max() > 0


def test_batch_smaller_than_input_and_one_by_one(official_model, outcomes, inputs):
    """Batch size 1 and a batch larger than the input give the same results as batch 3."""
    ref = {o.key: o for o in outcomes["pillow"]}
    for bs in (1, 64):
        out = _run(official_model, inputs, preprocess="pillow", batch_size=bs, render=False)
        assert [o.key for o in out] == [k for k, _ in inputs]
        for o in out:
            assert o.ok == ref[o.key].ok and o.error_code == ref[o.key].error_code
            if o.ok:
                assert o.result.p_fake == pytest.approx(ref[o.key].result.p_fake, abs=1e-5)
                assert o.result.stats["fake"]["peak"] == ref[o.key].result.stats["fake"]["peak"]


def test_render_false_makes_no_heatmaps(official_model, inputs):
    out = _run(official_model, inputs, preprocess="device", render=False)
    ok = [o for o in out if o.ok]
    assert len(ok) == len(inputs) - len(EXPECTED_FAILURES)
    assert all(o.result.heatmaps == {} for o in ok)
    assert all(o.result.stats["fake"]["max"] >= 0 for o in ok)


@pytest.mark.parametrize("path", ["pillow", "device"])
def test_out_of_memory_splits_the_batch(tiny_model, inputs, path, monkeypatch, caplog):
    options = AnalysisOptions(batch_size=8, decode_threads=2, preprocess=path)
    with Analyzer(tiny_model, options, device="cpu") as analyzer:
        real_attribute = analyzer.cam.attribute
        sizes = []

        def attribute(x, **kw):
            sizes.append(x.shape[0])
            if x.shape[0] > 2:
                raise torch.OutOfMemoryError("simulated: out of device memory")
            return real_attribute(x, **kw)

        monkeypatch.setattr(analyzer.cam, "attribute", attribute)
        out = list(analyzer.analyze(inputs))
        stages = analyzer.stage_times()
    assert [o.key for o in out] == [k for k, _ in inputs]
    assert {o.key for o in out if not o.ok} == EXPECTED_FAILURES
    assert all(set(o.result.heatmaps) == HEATMAPS for o in out if o.ok)
    assert any(s > 2 for s in sizes)  # the full batches were tried first, then split
    assert sum(s for s in sizes if s <= 2) == len(inputs) - len(EXPECTED_FAILURES)
    assert "out of memory" in caplog.text
    assert stages["items"] == len(inputs)


def test_single_image_out_of_memory_is_raised(tiny_model, inputs, monkeypatch):
    with Analyzer(tiny_model, AnalysisOptions(batch_size=4, decode_threads=2), device="cpu") as analyzer:

        def attribute(x, **kw):
            raise torch.OutOfMemoryError("simulated")

        monkeypatch.setattr(analyzer.cam, "attribute", attribute)
        with pytest.raises(torch.OutOfMemoryError):
            list(analyzer.analyze(inputs[:1]))


def test_preprocess_option_and_errors(tiny_model):
    with Analyzer(tiny_model, AnalysisOptions(), device="cpu") as analyzer:
        assert analyzer.preprocess_path == "pillow"
    with Analyzer(tiny_model, AnalysisOptions(preprocess="device"), device="cpu") as analyzer:
        assert analyzer.preprocess_path == "device"
    with pytest.raises(ValueError, match="preprocessing setting"):
        Analyzer(tiny_model, AnalysisOptions(preprocess="gpu"), device="cpu")


def test_empty_input_and_only_failures(tiny_model):
    with Analyzer(tiny_model, AnalysisOptions(decode_threads=2), device="cpu") as analyzer:
        assert list(analyzer.analyze([])) == []
        out = list(analyzer.analyze([("a", b""), ("b", ValueError("gone")), ("c", 42)]))
    assert [(o.key, o.error_code) for o in out] == [
        ("a", "empty"),
        ("b", "fetch_failed"),
        ("c", "decode_failed"),
    ]


def test_stage_times(tiny_model, inputs):
    with Analyzer(tiny_model, AnalysisOptions(batch_size=4, decode_threads=2), device="cpu") as analyzer:
        list(analyzer.analyze(inputs))
        stages = analyzer.stage_times()
        analyzer.reset_stage_times()
        assert analyzer.stage_times()["items"] == 0
    assert stages["items"] == len(inputs)
    assert stages["model_cam"] > 0 and stages["preprocess"] > 0 and stages["encode"] > 0
    assert stages["wait_encode"] >= 0


def test_make_analyzer_passes_the_preprocess_setting(tiny_model):
    from poundcam.runtime import make_analyzer
    from poundcam.settings import Settings

    settings = Settings.from_env(
        environ={"POUNDCAM_JPEG_ROUNDTRIP": "tensor"}, preprocess="device", batch_size=5
    )
    analyzer = make_analyzer(settings, model=tiny_model, device=torch.device("cpu"))
    try:
        assert analyzer.options.preprocess == "device" and analyzer.preprocess_path == "device"
        assert analyzer._pre.roundtrip == "tensor"
        assert analyzer.options.batch_size == 5
    finally:
        analyzer.close()


def test_a_cam_layer_the_model_does_not_have_is_a_settings_error(tiny_model):
    from poundcam.runtime import make_analyzer
    from poundcam.settings import Settings, SettingsError

    settings = Settings.from_env(environ={"POUNDCAM_CAM_LAYER": "42"})
    with pytest.raises(SettingsError, match="layer 42 out of range.*POUNDCAM_CAM_LAYER"):
        make_analyzer(settings, model=tiny_model, device=torch.device("cpu"))
    # an error that names its own cause is not relabelled as the layer's
    from poundcam.errors import InvalidRequestError

    settings = Settings.from_env(
        environ={"POUNDCAM_DEEP_MAPS": "flagged", "POUNDCAM_THRESHOLD": "1.2345678901234567e-300"}
    )
    with pytest.raises(InvalidRequestError, match="over 64 characters") as info:
        make_analyzer(settings, model=tiny_model, device=torch.device("cpu"))
    assert "POUNDCAM_CAM_LAYER" not in str(info.value)


def test_compiled_cam_setting_reaches_the_engine_and_keeps_the_results(official_model, outcomes, inputs):
    """POUNDCAM_COMPILE=on: the CAM's no-autograd part is compiled for the configured batch size
    (the last, smaller batch is padded to it) and the results are those of the eager engine."""
    from poundcam.runtime import make_analyzer
    from poundcam.settings import Settings

    settings = Settings.from_env(environ={"POUNDCAM_COMPILE": "on"}, batch_size=4, preprocess="pillow")
    analyzer = make_analyzer(settings, model=official_model, device=torch.device("cpu"))
    try:
        assert analyzer.cam.compiled and analyzer.cam.compile_batch == 4
        out = list(analyzer.analyze(inputs))
    finally:
        analyzer.close()
    ref = {o.key: o for o in outcomes["pillow"]}
    assert [o.key for o in out] == [k for k, _ in inputs]
    for o in out:
        assert o.ok == ref[o.key].ok and o.error_code == ref[o.key].error_code
        if o.ok:
            assert o.result.p_fake == pytest.approx(ref[o.key].result.p_fake, abs=1e-4)
            for label in ("real", "fake"):
                got, want = o.result.stats[label], ref[o.key].result.stats[label]
                assert got["max"] == pytest.approx(want["max"], rel=1e-3, abs=1e-6)


def test_items_are_read_in_the_calling_thread(tiny_model, inputs):
    """Callers feed analyze() from generators that touch their own state (the pipeline's
    fetches and database look-ups): they run in the caller's thread only."""
    import threading

    caller = threading.get_ident()
    threads = set()

    def gen():
        for pair in inputs * 3:
            threads.add(threading.get_ident())
            yield pair

    with Analyzer(
        tiny_model, AnalysisOptions(batch_size=2, decode_threads=2, render=False), device="cpu"
    ) as analyzer:
        out = list(analyzer.analyze(gen()))
    assert threads == {caller}
    assert [o.key for o in out] == [k for k, _ in inputs * 3]


def test_source_error_and_early_close_do_not_hang(tiny_model, inputs):
    def broken():
        yield inputs[0]
        yield inputs[2]
        raise RuntimeError("source broke")

    with Analyzer(tiny_model, AnalysisOptions(batch_size=1, decode_threads=2), device="cpu") as analyzer:
        with pytest.raises(RuntimeError, match="source broke"):
            list(analyzer.analyze(broken()))
        stream = analyzer.analyze(iter(inputs * 4))
        first = next(stream)
        stream.close()
        assert first.key == inputs[0][0]
        assert [o.key for o in analyzer.analyze(inputs[:3])] == [k for k, _ in inputs[:3]]
