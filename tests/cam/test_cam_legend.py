"""The comparative heatmap's legend strip: its text line, put together from cells drawn once,
is pixel for pixel the line ImageDraw.text draws with the default font, for any P(fake) and
scale a caller passes (nan, inf, -0 and both ends of the float range included), at every
width, from many threads at once."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import ImageDraw, ImageFont

from poundcam.cam import render

WIDTHS = [1, 3, 10, 68, 150, 200, 201, 224, 333, 400, 512, 1000, 1920]
EDGES = [
    0.0,
    -0.0,
    1.0,
    0.5,
    0.0005,  # rounds to 0.001 or 0.000
    0.9995,
    0.99949,
    1e-5,
    0.0001234,
    9.995,  # "10" at three significant digits
    99950.0,
    123456.0,
    1e16,
    1e-300,
    5e-324,  # the smallest subnormal
    1.7976931348623157e308,
    math.nan,
    math.inf,
]


def reference(width: int, p_fake: float, scale: float) -> np.ndarray:
    """The legend as it was drawn before the cells: the text with ImageDraw over the bar."""
    img = render._legend_base(width).copy()
    ImageDraw.Draw(img).text(
        (3, 16),
        f"P(fake) {p_fake:.3f}   |max| {scale:.3g}",
        fill=(230, 230, 230),
        font=ImageFont.load_default(),
    )
    rows = np.zeros((render.LEGEND_HEIGHT, 1 + 3 * width), dtype=np.uint8)
    rows[:, 1:] = np.asarray(img).reshape(render.LEGEND_HEIGHT, 3 * width)
    return rows


def values(n: int, seed: int) -> list[tuple[float, float]]:
    """The edge values against each other, then random P(fake) and scales over 600 decades."""
    rng = np.random.default_rng(seed)
    out = [(p, s) for p in EDGES for s in EDGES]
    out += [(float(p), float(s)) for p, s in zip(rng.random(n), 10 ** rng.uniform(-300, 300, n), strict=True)]
    out += [(float(p), float(s)) for p, s in zip(rng.random(n), 10 ** rng.uniform(-8, 3, n), strict=True)]
    return out


def test_the_cells_are_used_with_this_pillow():
    """Otherwise every line is Pillow's and the identity below holds trivially."""
    glyphs = render._legend_glyphs()
    assert glyphs is not None, "the default font's line cannot be put together from cells"
    assert set("0123456789.e+-na") <= set(glyphs.cells)
    for width in WIDTHS:
        assert render._legend_base_rows(width)[1], width
    assert glyphs.line(0.123, 4.56e-05) is not None
    assert glyphs.line(0.5, math.inf) is None  # the f of "inf" overhangs its advance: Pillow's


@pytest.mark.parametrize("width", WIDTHS)
def test_legend_rows_are_pillows_pixel_for_pixel(width):
    for p_fake, scale in values(150, seed=width):
        got = render.legend_rows(width, p_fake, scale)
        want = reference(width, p_fake, scale)
        assert got.dtype == np.uint8 and got.shape == want.shape
        assert np.array_equal(got, want), (width, p_fake, scale, render.legend_text(p_fake, scale))


def test_draw_legend_rows_is_the_reference():
    for p_fake, scale in values(20, seed=1):
        assert np.array_equal(
            render.draw_legend_rows(400, render.legend_text(p_fake, scale)), reference(400, p_fake, scale)
        )


def test_many_threads_draw_the_same_legends():
    """The cells and base rows are shared and read-only; each call returns its own rows."""
    jobs = [(w, p, s) for w in (200, 333, 512) for p, s in values(100, seed=w)]
    want = [reference(*j) for j in jobs]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda j: render.legend_rows(*j), jobs))
    for j, g, w in zip(jobs, got, want, strict=True):
        assert np.array_equal(g, w), j
    got[0][:] = 0  # a caller's rows are its own: the next legend is unchanged
    assert np.array_equal(render.legend_rows(*jobs[0]), want[0])
    glyphs = render._legend_glyphs()
    assert glyphs is not None
    assert not any(c.flags.writeable for c in glyphs.cells.values())
    assert not render._legend_base_rows(200)[0].flags.writeable
