"""The HTML report of a processed job, opened in headless Chromium: every item row is there,
every heatmap panel decodes, failed items show their error, and the page's own script sorts and
filters. A screenshot is saved as a test artifact."""
from __future__ import annotations

import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from poundcam.cli import main

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--virtual-time-budget=10000"]


def run_chromium(chromium: str, tmp_path: Path, url: str, *extra: str) -> str:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    proc = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


class Dom(HTMLParser):
    """Rows (tr.item) in document order with their attributes and images."""

    def __init__(self):
        super().__init__()
        self.rows: list[dict] = []
        self.body: dict = {}
        self.scripts_with_src = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        elif tag == "tr" and "item" in (a.get("class") or "").split():
            self.rows.append({**a, "imgs": [], "errors": []})
        elif tag == "img" and self.rows:
            self.rows[-1]["imgs"].append(a)
        elif tag == "td" and self.rows and "error" in (a.get("class") or "").split():
            self.rows[-1]["errors"].append(a)
        elif tag == "script" and a.get("src"):
            self.scripts_with_src += 1


def parse(dom: str) -> Dom:
    p = Dom()
    p.feed(dom)
    return p


def write_report(job: dict, out: Path, *extra: str) -> Path:
    rc = main(["report", job["job_id"], "--db", job["db_url"], "--heatmaps", str(job["heatmaps"]),
               "--out", str(out), *extra])
    assert rc == 0
    return out


def test_report_renders_every_row_and_overlay(chromium, processed_job, tmp_path, artifacts_dir):
    from poundcam import client
    from poundcam.settings import Settings

    report = write_report(processed_job, tmp_path / "report.html")
    rows = client.results(processed_job["job_id"],
                          settings=Settings.from_env(database_url=processed_job["db_url"]))
    dom = parse(run_chromium(chromium, tmp_path, report.as_uri(), "--dump-dom"))

    assert dom.body.get("data-ready") == "1"  # the page's script ran to the end
    assert [r["data-position"] for r in dom.rows] == [str(r["position"]) for r in rows]
    assert len(rows) == 4
    for row, rendered in zip(rows, dom.rows):
        if row["status"] == "done":
            panels = {img["data-heatmap"]: img for img in rendered["imgs"]}
            assert set(panels) == {"fake_overlay_original", "real_overlay", "fake_overlay"}
            for name, img in panels.items():
                assert img.get("data-loaded") == "1", (row["uri"], name)
                assert int(img["data-natural-width"]) > 0
            assert int(panels["real_overlay"]["data-natural-width"]) == 224
            assert rendered["data-label"] == row["label"]
            assert float(rendered["data-p-fake"]) == pytest.approx(row["p_fake"], abs=1e-6)
        else:
            assert row["status"] == "failed" and rendered["imgs"] == []
            assert len(rendered["errors"]) == 1
    # The hostile file name is text, not markup: no element came out of it.
    assert sum(len(r["imgs"]) for r in dom.rows) == 9
    assert 'onerror=alert(1)&gt;' in report.read_text()

    shot = artifacts_dir / "report.png"
    shot.unlink(missing_ok=True)
    run_chromium(chromium, tmp_path, report.as_uri(), f"--screenshot={shot}",
                 "--window-size=1400,2000")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_sorting_and_filtering_run_in_the_browser(chromium, processed_job, tmp_path):
    """The page's script, driven through the URL fragment: P(fake) values and labels are set
    on copies of the job's records so that both labels and an order exist."""
    from poundcam import client
    from poundcam.report.build import build_report
    from poundcam.settings import Settings
    from poundcam.storage import LocalStore

    rows = client.results(processed_job["job_id"],
                          settings=Settings.from_env(database_url=processed_job["db_url"]))
    done = [r for r in rows if r["status"] == "done"]
    for r, (p, label) in zip(done, ((0.2, "real"), (0.95, "fake"), (0.7, "fake"))):
        r.update(p_fake=p, label=label)
    store = LocalStore(processed_job["heatmaps"])
    page = tmp_path / "sorted.html"
    page.write_text(build_report(rows, lambda k: store.get(store.uri_for(k))), encoding="utf-8")
    by_p = sorted(done, key=lambda r: -r["p_fake"])

    dom = parse(run_chromium(chromium, tmp_path, page.as_uri() + "#sort=p_fake:desc",
                             "--dump-dom"))
    assert dom.body["data-sort"] == "p_fake:desc"
    order = [int(r["data-position"]) for r in dom.rows]
    failed = [r["position"] for r in rows if r["status"] == "failed"]
    assert order == [r["position"] for r in by_p] + failed  # no P(fake): last

    dom = parse(run_chromium(chromium, tmp_path, page.as_uri() + "#label=fake&min=0.8",
                             "--dump-dom"))
    visible = [int(r["data-position"]) for r in dom.rows if "hidden" not in r]
    assert visible == [by_p[0]["position"]] and dom.body["data-shown"] == "1"

    dom = parse(run_chromium(chromium, tmp_path, page.as_uri() + "#label=failed", "--dump-dom"))
    assert [int(r["data-position"]) for r in dom.rows if "hidden" not in r] == failed
