"""The HTML report of a processed job, opened in headless Chromium: every item row is there,
every picture decodes, failed items show their error, the page's own script sorts, filters and
zooms; and screenshots show a reviewer the pictures themselves in their panels, the colour
legend as the overlays draw it, and a zoomed picture filling the window. The screenshots are
saved as test artifacts (test-artifacts/report.png, report-zoom.png). In a laptop's window and
in half a screen, every picture panel of a row is on the screen, without scrolling sideways."""

from __future__ import annotations

import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from poundcam.cli import main

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=10000",
]


def run_chromium(chromium: str, tmp_path: Path, url: str, *extra: str, scrollbars: bool = False) -> str:
    """Chromium's output for ``url``; ``scrollbars``: shown, taking their width off the page as
    in a reviewer's window (hidden otherwise, so that a screenshot is the page alone)."""
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    flags = [f for f in CHROMIUM_FLAGS if not (scrollbars and f == "--hide-scrollbars")]
    proc = subprocess.run(
        [chromium, *flags, f"--user-data-dir={profile}", *extra, url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


class Dom(HTMLParser):
    """Rows (article.item) in document order with their attributes and images."""

    def __init__(self):
        super().__init__()
        self.rows: list[dict] = []
        self.body: dict = {}
        self.scripts_with_src = 0
        self.zoom: dict = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        elif tag == "article" and "item" in (a.get("class") or "").split():
            self.rows.append({**a, "imgs": [], "errors": [], "ramps": []})
        elif tag == "img" and a.get("id") == "zoom-img":
            self.zoom = a
        elif tag == "img" and self.rows:
            self.rows[-1]["imgs"].append(a)
        elif tag == "div" and a.get("class") == "ramp" and self.rows:
            self.rows[-1]["ramps"].append(a)
        elif tag == "div" and self.rows and "error" in (a.get("class") or "").split():
            self.rows[-1]["errors"].append(a)
        elif tag == "script" and a.get("src"):
            self.scripts_with_src += 1


def parse(dom: str) -> Dom:
    p = Dom()
    p.feed(dom)
    return p


def write_report(job: dict, out: Path, *extra: str) -> Path:
    rc = main(
        [
            "report",
            job["job_id"],
            "--db",
            job["db_url"],
            "--heatmaps",
            str(job["heatmaps"]),
            "--out",
            str(out),
            *extra,
        ]
    )
    assert rc == 0
    return out


PANELS = {"original", "fake_overlay", "real_overlay", "fake_map", "real_map"}


def test_report_renders_every_row_and_picture(chromium, processed_job, tmp_path):
    from poundcam import client
    from poundcam.settings import Settings

    report = write_report(processed_job, tmp_path / "report.html")
    rows = client.results(
        processed_job["job_id"], settings=Settings.from_env(database_url=processed_job["db_url"])
    )
    # Pictures load as their row nears the view (report.js): in a window of this size every row
    # is near it (in a narrow one, the pictures go under each row's verdict, and rows further
    # down load as the reviewer scrolls).
    dom = parse(run_chromium(chromium, tmp_path, report.as_uri(), "--dump-dom", "--window-size=1400,1000"))

    assert dom.body.get("data-ready") == "1"  # the page's script ran to the end
    assert [r["data-position"] for r in dom.rows] == [str(r["position"]) for r in rows]
    assert len(rows) == 4
    for row, rendered in zip(rows, dom.rows, strict=True):
        if row["status"] == "done":
            panels = {img["data-panel"]: img for img in rendered["imgs"]}
            assert set(panels) == PANELS
            for name, img in panels.items():
                assert img.get("data-loaded") == "1", (row["uri"], name)
                assert int(img["data-natural-width"]) > 0
            assert rendered["data-label"] == row["label"]
            assert float(rendered["data-p-fake"]) == pytest.approx(row["p_fake"], abs=1e-6)
        else:
            assert row["status"] == "failed" and rendered["imgs"] == []
            assert len(rendered["errors"]) == 1
    photo = {img["data-panel"]: img for img in dom.rows[0]["imgs"]}
    assert int(photo["fake_overlay"]["data-natural-width"]) == 224  # the crop at full size
    # The hostile file name is text, not markup: no element came out of it.
    assert sum(len(r["imgs"]) for r in dom.rows) == 15
    assert "onerror=alert(1)&gt;" in report.read_text()


def _picture(src: str):
    import base64
    import io

    from PIL import Image

    assert src.startswith("data:image/webp;base64,")
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB")


def _rect(el: dict) -> tuple[int, int, int, int]:
    return tuple(int(v) for v in el["data-rect"].split(","))


def _shown_as(picture, rect):
    """``picture`` as CSS object-fit: contain draws it into ``rect`` (x, y, w, h): the box it
    covers and the picture at that size."""
    x, y, w, h = rect
    scale = min(w / picture.width, h / picture.height)
    pw, ph = round(picture.width * scale), round(picture.height * scale)
    box = (x + (w - pw) // 2, y + (h - ph) // 2, x + (w - pw) // 2 + pw, y + (h - ph) // 2 + ph)
    return box, picture.resize((pw, ph))


def _difference(a, b) -> float:
    import numpy as np

    return float(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean())


def _screenshot(chromium, tmp_path, url: str, shot: Path, size=(1400, 1000)):
    """A screenshot of ``url`` and its DOM with the layout probe's rectangles. They come from
    two runs: the DOM run's window gets taller by the browser's own bars (headless Chromium
    takes them off the viewport when dumping the DOM, not when taking a screenshot), so that
    both lay the page out in the same viewport."""
    from PIL import Image

    shot.unlink(missing_ok=True)
    run_chromium(
        chromium,
        tmp_path,
        url,
        f"--screenshot={shot}",
        f"--window-size={size[0]},{size[1]}",
        "--force-device-scale-factor=1",
    )
    height = size[1]
    for _ in range(2):
        dom = parse(
            run_chromium(
                chromium,
                tmp_path,
                url,
                "--dump-dom",
                "--force-device-scale-factor=1",
                f"--window-size={size[0]},{height}",
            )
        )
        seen = tuple(int(v) for v in dom.body["data-viewport"].split("x"))
        if seen == size:
            break
        height += size[1] - seen[1]
    assert seen == size, seen
    screen = Image.open(shot).convert("RGB")
    assert screen.size == size
    return dom, screen


def test_screenshots_show_the_pictures_the_legend_and_the_zoom(
    chromium, processed_job, tmp_path, artifacts_dir
):
    """What a reviewer sees, pixel by pixel: each panel of the first item (a photograph) on
    the screen is its picture (and not another panel's), the legend's colours are the
    overlays' ramp, and a zoomed picture fills most of the window over a darkened page."""
    from poundcam.cam.colormap import RAMP

    report = write_report(processed_job, tmp_path / "report.html")
    dom, screen = _screenshot(chromium, tmp_path, report.as_uri() + "#probe", artifacts_dir / "report.png")
    first = dom.rows[0]
    pictures = {img["data-panel"]: _picture(img["data-src"]) for img in first["imgs"]}
    for img in first["imgs"]:
        box, expected = _shown_as(pictures[img["data-panel"]], _rect(img))
        seen = screen.crop(box)
        own = _difference(seen, expected)
        assert own < 8, (img["data-panel"], own)  # the picture itself, decoded and scaled
        other = "fake_map" if img["data-panel"] != "fake_map" else "original"
        assert _difference(seen, pictures[other].resize(seen.size)) > 3 * own + 10

    x, y, w, h = _rect(first["ramps"][0])
    for frac in (0.05, 0.3, 0.5, 0.7, 0.95):
        seen = screen.getpixel((x + round(frac * (w - 1)), y + h // 2))
        i = next(k for k in range(1, len(RAMP)) if RAMP[k][0] >= frac)
        (p0, *c0), (p1, *c1) = RAMP[i - 1], RAMP[i]
        want = [255 * (a + (b - a) * (frac - p0) / (p1 - p0)) for a, b in zip(c0, c1, strict=True)]
        assert max(abs(s - v) for s, v in zip(seen, want, strict=True)) < 14, (frac, seen, want)

    position = first["data-position"]
    dom, screen = _screenshot(
        chromium,
        tmp_path,
        report.as_uri() + f"#zoom={position}:fake_overlay&probe",
        artifacts_dir / "report-zoom.png",
    )
    assert dom.body.get("data-zoom") == f"{position}:fake_overlay"
    assert dom.zoom["src"] == next(i["data-src"] for i in first["imgs"] if i["data-panel"] == "fake_overlay")
    zx, zy, zw, zh = _rect(dom.zoom)
    assert zw >= 700 and zh >= 700  # a 224-pixel picture, more than three times as large
    box, expected = _shown_as(pictures["fake_overlay"], (zx, zy, zw, zh))
    assert _difference(screen.crop(box), expected) < 8
    assert max(screen.getpixel((5, 5))) < 120  # the page behind is darkened


def test_sorting_and_filtering_run_in_the_browser(chromium, processed_job, tmp_path):
    """The page's script, driven through the URL fragment: P(fake) values and labels are set
    on copies of the job's records so that both labels and an order exist."""
    from poundcam import client
    from poundcam.report.build import build_report
    from poundcam.settings import Settings
    from poundcam.storage import LocalStore

    rows = client.results(
        processed_job["job_id"], settings=Settings.from_env(database_url=processed_job["db_url"])
    )
    done = [r for r in rows if r["status"] == "done"]
    for r, (p, label) in zip(done, ((0.2, "real"), (0.95, "fake"), (0.7, "fake")), strict=True):
        r.update(p_fake=p, label=label)
    store = LocalStore(processed_job["heatmaps"])
    page = tmp_path / "sorted.html"
    page.write_text(build_report(rows, lambda k: store.get(store.uri_for(k))), encoding="utf-8")
    by_p = sorted(done, key=lambda r: -r["p_fake"])

    dom = parse(run_chromium(chromium, tmp_path, page.as_uri() + "#sort=p_fake:desc", "--dump-dom"))
    assert dom.body["data-sort"] == "p_fake:desc"
    order = [int(r["data-position"]) for r in dom.rows]
    failed = [r["position"] for r in rows if r["status"] == "failed"]
    assert order == [r["position"] for r in by_p] + failed  # no P(fake): last

    dom = parse(run_chromium(chromium, tmp_path, page.as_uri() + "#label=fake&min=0.8", "--dump-dom"))
    visible = [int(r["data-position"]) for r in dom.rows if "hidden" not in r]
    assert visible == [by_p[0]["position"]] and dom.body["data-shown"] == "1"

    dom = parse(run_chromium(chromium, tmp_path, page.as_uri() + "#label=failed", "--dump-dom"))
    assert [int(r["data-position"]) for r in dom.rows if "hidden" not in r] == failed


@pytest.fixture(scope="module")
def explained_job(processed_job, tmp_path_factory, official_dir):
    """``processed_job`` with the deep maps of its analyses stored (``poundcam explain JOB``):
    each analysed item's row has seven picture panels. In a copy of its database, so that the
    other tests keep the job without them."""
    import contextlib
    import sqlite3

    db = tmp_path_factory.mktemp("explained") / "poundcam.db"
    src = sqlite3.connect(processed_job["db_url"].removeprefix("sqlite:///"))
    with contextlib.closing(src), contextlib.closing(sqlite3.connect(db)) as dst:
        src.backup(dst)
    job = {**processed_job, "db_url": f"sqlite:///{db}"}
    explain = ["explain", job["job_id"], "--db", job["db_url"], "--device", "cpu"]
    assert main([*explain, "--weights", str(official_dir / "last.ckpt")]) == 0
    return job


@pytest.mark.parametrize("width", [1400, 900])  # a laptop's window, half a screen
def test_every_panel_is_on_the_screen_in_a_narrow_window(chromium, explained_job, tmp_path, width):
    """With the deep maps a row has seven panels: in a window ``width`` wide, its scrollbar
    shown, the page is no wider than the window and every panel lies within its row's width (a
    row cuts off what goes past its sides: content-visibility), the pictures scaled down at
    most a little."""
    report = write_report(explained_job, tmp_path / "report.html")
    dom = parse(
        run_chromium(
            chromium,
            tmp_path,
            report.as_uri() + "#probe",
            "--dump-dom",
            f"--window-size={width},1000",
            "--force-device-scale-factor=1",
            scrollbars=True,
        )
    )
    assert dom.body["data-overflow-x"] == "0"  # nothing to scroll sideways
    done = [r for r in dom.rows if r["imgs"]]
    assert len(done) == 3
    for row in done:
        left, _, row_width, _ = _rect(row)
        assert len(row["imgs"]) == 7
        for img in row["imgs"]:
            x, _, w, _ = _rect(img)
            assert left - 1 <= x and x + w <= left + row_width + 1, (width, img["data-panel"], x, w)
            big = img["data-panel"] in ("original", "fake_overlay", "real_overlay")
            assert w >= (180 if big else 99), (width, img["data-panel"], w)  # 224, 108 at full size
