"""Renderings on demand from the stored maps equal, byte for byte, the files the analysis drew
before it wrote only one heatmap per image: the old way (overlays drawn for the batch from the
model's input, as the Analyzer did) against the new way (maps through the database, the source
image decoded again, poundcam.cam.ondemand)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from poundcam.analysis import AnalysisOptions, Analyzer
from poundcam.cam import ComparativeCAM, render
from poundcam.cam.ondemand import RENDERINGS, render_maps, source_view
from poundcam.preprocess.batched import DevicePreprocessor


def _scene(w: int, h: int, seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * (3 + c) + y * (5 - c)) % 256 for c in range(3)], -1)
    img = np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(img, "RGB").convert(mode)


def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def images(official_dir) -> list[bytes]:
    exif = Image.Exif()
    exif[0x0112] = 6
    return [
        _encode(_scene(320, 240, 0), "JPEG", quality=92),
        _encode(_scene(200, 300, 1), "PNG"),
        _encode(_scene(300, 180, 2), "JPEG", quality=90, exif=exif.tobytes()),
        _encode(_scene(900, 140, 3, "L"), "JPEG", quality=85),
        (official_dir / "images" / "img0.png").read_bytes(),
    ]


def _old_way(model, images: list[bytes]) -> list[dict[str, bytes]]:
    """The six files per image as the Analyzer drew them: one batch preprocessed on the Pillow
    path, the overlays drawn for the batch from its input tensor and display originals."""
    with DevicePreprocessor("cpu", threads=2, force="pillow", keep_originals=True) as pre:
        batch = pre.preprocess_batch(images)
        items = batch.ok
        res = ComparativeCAM(model, method="hirescam", target="contrastive").attribute(
            batch.tensor, on_invalid="report"
        )
        crop_rows = render.overlay_scanlines(batch.tensor, res.real, res.fake)
        displays = [
            torch.from_numpy(
                render.display_original_pil(
                    it.original_image(), it.geometry, reducing_gap=render.DISPLAY_REDUCING_GAP
                )
            ).permute(2, 0, 1)
            for it in items
        ]
        original_rows = render.original_overlay_scanlines(
            res.real, res.fake, displays, [it.geometry for it in items]
        )
        return [
            render.encode_heatmaps(crop_rows[i], original_rows[i], res.real[i], res.fake[i])
            for i in range(len(items))
        ]


def _row(record: dict) -> dict:
    """An analysis record as the pipeline writes it."""
    record["geometry"] = {**record["geometry"], "mode": record.pop("original_mode")}
    return {**record, "heatmap_keys": {}}


def test_on_demand_equals_the_analysis(official_model, images, sqlite_url):
    from poundcam.db import find_analysis, make_session_factory, session_scope, upsert_analyses
    from poundcam.db.migrate import upgrade
    from poundcam.db.repository import stored_map

    old = _old_way(official_model, images)
    options = AnalysisOptions(batch_size=len(images), decode_threads=2, preprocess="pillow")
    with Analyzer(official_model, options, device="cpu") as analyzer:
        outcomes = list(analyzer.analyze(enumerate(images)))
    assert all(o.ok for o in outcomes)
    upgrade(sqlite_url)
    sessions = make_session_factory(sqlite_url)
    with session_scope(sessions) as s:
        upsert_analyses(s, [_row(o.result.record()) for o in outcomes])
    for outcome, data, before in zip(outcomes, images, old, strict=True):
        r = outcome.result
        assert set(r.heatmaps) == {"comparative"}  # the one file the analysis writes now
        with session_scope(sessions) as s:
            row = find_analysis(s, r.sha256, r.model_id, r.cam_config_id)
            real, fake = stored_map(row.real_map), stored_map(row.fake_map)
        assert np.array_equal(real, r.real_map) and np.array_equal(fake, r.fake_map)
        now = render_maps(real, fake, source_view(data), p_fake=r.p_fake)
        assert set(now) == set(RENDERINGS)
        for name, png in before.items():
            assert now[name] == png, name
        assert now["comparative"] == r.heatmaps["comparative"]
    sessions.kw["bind"].dispose()


def test_maps_only_without_the_source():
    real = np.zeros((4, 4), np.float32)
    fake = np.arange(16, dtype=np.float32).reshape(4, 4)
    out = render_maps(real, fake, None)
    assert set(out) == {"real_raw16", "fake_raw16"}
    assert np.allclose(render.read_raw16_png(out["fake_raw16"]), fake, atol=15 / 65535)


def test_comparative_heatmap_reads_as_it_stands():
    """The one file: the original with fake evidence in red and real evidence in blue, a
    legend strip below, and the scale and P(fake) in text fields."""
    img = _scene(300, 200, 5)
    view = source_view(_encode(img, "PNG"))
    real = np.zeros((7, 7), np.float32)
    fake = np.zeros((7, 7), np.float32)
    real[1, 1], fake[5, 5] = 1.0, 2.0
    png = render_maps(real, fake, view, p_fake=0.875, names=["comparative"])["comparative"]
    out = Image.open(io.BytesIO(png))
    out.load()
    assert out.size == (300, 200 + render.LEGEND_HEIGHT)
    assert out.text["poundcam.scale"] == "2.0" and out.text["poundcam.p_fake"] == "0.875"
    a = np.asarray(out).astype(int)
    w, h = 300, 200
    g = view.geometry
    left, top, right, bottom = g.original_box()

    def at(cell_row, cell_col):  # the display pixel at the centre of a grid cell
        x = left + (cell_col + 0.5) / 7 * (right - left)
        y = top + (cell_row + 0.5) / 7 * (bottom - top)
        return a[int(y * h / g.original[1]), int(x * w / g.original[0])]

    red, blue = at(5, 5), at(1, 1)
    assert red[0] > red[2] + 40 and blue[2] > blue[0] + 40
