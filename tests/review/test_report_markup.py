"""The report's markup without a browser: controls and data attributes for sorting and
filtering, escaping of untrusted strings, no external resources, a CSP that admits only the
page's own script, unreadable pictures shown as errors, compressed thumbnails small enough for
a 1,000-item job; the selection options; and the command against the S3 server with embedded
and presigned images."""

from __future__ import annotations

import base64
import hashlib
import re
import urllib.request

import pytest

from poundcam import client
from poundcam.cli import main
from poundcam.report import select_rows
from poundcam.report.build import build_report, page_script
from poundcam.settings import Settings
from poundcam.storage import LocalStore, StorageError

HOSTILE_NAME = 'x"><img src=x onerror=alert(1)>.png'  # as in conftest.py
PANELS = ("original", "fake_overlay", "real_overlay", "fake_map", "real_map")
MAX_REPORT_BYTES_PER_ITEM = 30_000_000 // 1000  # a 1,000-item job in at most 30 MB


@pytest.fixture(scope="module")
def drawn(processed_job):
    """What the report command reads: the one stored heatmap per image from the folder, the
    overlays and raw maps drawn from the stored maps."""
    from poundcam.commands.render import RenderedPanels
    from poundcam.commands.review import DRAWN_PANELS

    store = LocalStore(processed_job["heatmaps"])
    return RenderedPanels(
        Settings.from_env(database_url=processed_job["db_url"]),
        processed_job["job_id"],
        DRAWN_PANELS,
        lambda key: store.get(store.uri_for(key)),
    )


@pytest.fixture(scope="module")
def job_rows(processed_job, drawn):
    return drawn.rows(
        client.results(
            processed_job["job_id"], settings=Settings.from_env(database_url=processed_job["db_url"])
        )
    )


@pytest.fixture(scope="module")
def local_fetch(drawn):
    return drawn.fetch


@pytest.fixture(scope="module")
def read_original(processed_job):
    store = LocalStore(processed_job["heatmaps"], read_roots=[processed_job["images"]])
    return store.get


def thumbs(page: str) -> list[tuple[str, str]]:
    return re.findall(r'<img class="thumb" data-panel="(\w+)" data-src="([^"]+)"', page)


def test_sorting_and_filtering_markup(job_rows, local_fetch):
    page = build_report(job_rows, local_fetch, job_id="j1")
    assert 'id="filter-label"' in page and 'id="filter-min-p"' in page
    assert 'id="filter-max-p"' in page
    for value in ("all", "fake", "real", "failed", "pending"):
        assert f'<option value="{value}">' in page
    assert 'data-sort="position"' in page and 'data-sort="p_fake"' in page
    items = re.findall(
        r'<article class="item[^"]*" data-position="(\d+)" data-status="(\w+)" '
        r'data-label="(\w*)" data-p-fake="([0-9.]*)">',
        page,
    )
    assert [int(i[0]) for i in items] == [r["position"] for r in job_rows]
    for (_, status, label, p), row in zip(items, job_rows, strict=True):
        assert status == row["status"]
        if status == "done":
            assert label == row["label"] and float(p) == pytest.approx(row["p_fake"], abs=1e-6)
        else:
            assert label == "" and p == ""


def test_each_item_shows_original_maps_legend_probability_and_threshold(job_rows, local_fetch, read_original):
    page = build_report(job_rows, local_fetch, fetch_original=read_original)
    done = [r for r in job_rows if r["status"] == "done"]
    shown = thumbs(page)
    assert [name for name, _ in shown] == list(PANELS) * len(done)
    assert all(src.startswith("data:image/webp;base64,UklGR") for _, src in shown)
    for row in done:
        scale = max(row["stats"]["real"]["max"], row["stats"]["fake"]["max"])
        assert f'data-scale="{scale:.6g}"' in page  # the legend's top value: the shared scale
        assert f"<span>{scale:.3g}</span>" in page
        assert f"P(fake) <b>{row['p_fake']:.4f}</b>" in page
    assert page.count('<div class="thr">threshold 0.50</div>') == len(done)
    assert page.count('class="pthr" style="left:50.0%"') == len(done)
    assert page.count('<div class="ramp"></div>') == len(done)
    assert ".ramp{background:linear-gradient(to right, rgb(48,18,59) 0%" in page


def test_untrusted_strings_are_escaped_and_nothing_is_external(job_rows, local_fetch):
    rows = [dict(r) for r in job_rows]
    failed = next(r for r in rows if r["status"] == "failed")
    failed["error_message"] = "</td><script>alert('x')</script>"
    page = build_report(rows, local_fetch, job_id='"><b>job</b>')
    assert "<script>alert" not in page and "&lt;script&gt;alert(&#39;x&#39;)" in page
    assert HOSTILE_NAME not in page
    assert "x&#34;&gt;&lt;img src=x onerror=alert(1)&gt;.png" in page
    assert "<b>job</b>" not in page
    assert page.count("<script") == 1  # the page's own
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert "<a " not in page  # URIs are text, never links
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    digest = base64.b64encode(hashlib.sha256(page_script().encode()).digest()).decode()
    assert f"script-src &#39;sha256-{digest}&#39;" in csp
    assert "default-src &#39;none&#39;" in csp and "img-src data:;" in csp
    assert f"<script>{page_script()}</script>" in page  # the hashed text, byte for byte


def test_unreadable_pictures_are_errors_not_pictures(job_rows):
    def fetch(key):
        if key.endswith("/fake_overlay"):  # drawn from the stored maps: rendered:<id>/<name>
            raise StorageError("not_found", f"{key}: no such file")
        return b"GIF89a not a png"

    page = build_report(job_rows, fetch)
    assert thumbs(page) == []
    assert page.count('data-error="not_found"') == 3
    assert page.count("real evidence unavailable: not a PNG file") == 3
    assert page.count("fake map unavailable: raw map unreadable (not a PNG file)") == 3
    assert page.count("original unavailable: the original is not readable here") == 3
    with pytest.raises(ValueError):
        build_report(job_rows)


def test_link_mode_checks_url_schemes(job_rows):
    page = build_report(job_rows, image_url=lambda k: "javascript:alert(1)//" + k)
    assert "javascript:" not in page.split('<main id="items"', 1)[1].split("<script>", 1)[0]
    assert page.count("refused an image URL with scheme") == 6
    page = build_report(job_rows, image_url=lambda k: f"https://h.example/{k}?sig=a&x=1")
    assert 'data-src="https://h.example/' in page and "sig=a&amp;x=1" in page
    assert "img-src data: https:;" in page


def test_thumbnails_keep_a_thousand_items_under_30_mb(job_rows, local_fetch, read_original):
    """Every analysed item, a photograph or noise (the worst case for compression), takes at
    most 30 kB of the page: 1,000 items at most 30 MB (benchmarks/report_bench.py builds and
    opens a real 1,000-item page)."""
    done = [r for r in job_rows if r["status"] == "done"]
    empty = len(build_report([], local_fetch).encode())
    for row in done:
        page = build_report([row], local_fetch, fetch_original=read_original)
        assert len(thumbs(page)) == len(PANELS)
        per_item = len(page.encode()) - empty
        assert per_item <= MAX_REPORT_BYTES_PER_ITEM, (row["uri"], per_item)
        stored = sum(len(local_fetch(k)) for k in row["heatmap_keys"].values())
        assert per_item < stored / 8  # the stored PNGs, as the page embedded them before


def test_select_rows_filters_sorts_and_limits():
    rows = [
        {
            "position": i,
            "status": "done",
            "label": lab,
            "p_fake": p,
            "stats": {"comparative": {"fake_share": s}},
        }
        for i, (lab, p, s) in enumerate(
            (("real", 0.1, 0.5), ("fake", 0.9, 0.2), ("fake", 0.7, 0.9), ("real", 0.3, 0.1))
        )
    ]
    rows.append({"position": 4, "status": "failed", "label": None, "p_fake": None, "stats": None})

    def pos(rs):
        return [r["position"] for r in rs]

    assert pos(select_rows(rows)) == [0, 1, 2, 3, 4]
    assert pos(select_rows(rows, sort="p_fake")) == [1, 2, 3, 0, 4]
    assert pos(select_rows(rows, sort="fake_share", limit=2)) == [2, 0]
    assert pos(select_rows(rows, label="fake")) == [1, 2]
    assert pos(select_rows(rows, min_prob=0.3, sort="p_fake")) == [1, 2, 3]
    with pytest.raises(ValueError):
        select_rows(rows, sort="uri")


def test_report_command_selects_and_finds_the_heatmap_folder(
    processed_job, job_rows, tmp_path, monkeypatch, capsys
):
    for var in ("POUNDCAM_LOCAL_ROOT", "POUNDCAM_HEATMAP_BUCKET", "POUNDCAM_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "fake.html"
    best = max((r for r in job_rows if r["status"] == "done"), key=lambda r: r["p_fake"])
    assert (
        main(
            [
                "report",
                processed_job["job_id"],
                "--db",
                processed_job["db_url"],
                "--out",
                str(out),
                "--sort",
                "p_fake",
                "--limit",
                "1",
                "--min-prob",
                "0",
            ]
        )
        == 0
    )
    page = out.read_text()
    assert re.findall(r'data-position="(\d+)"', page) == [str(best["position"])]
    assert [n for n, _ in thumbs(page)] == list(PANELS)  # found the heatmaps and the original
    assert "showing 1 of the job&#39;s 4 items: P(fake) ≥ 0, sorted by p_fake" in page
    assert "1 items (1 analysed)" in capsys.readouterr().out
    label = "fake" if best["label"] == "real" else "real"
    others = [r for r in job_rows if r["status"] == "done" and r["label"] == label]
    assert (
        main(
            [
                "report",
                processed_job["job_id"],
                "--db",
                processed_job["db_url"],
                "--out",
                str(out),
                "--label",
                label,
            ]
        )
        == 0
    )
    assert len(re.findall(r'<article class="item', out.read_text())) == len(others)


def test_pictures_that_cannot_be_read_are_counted_on_stderr(processed_job, tmp_path, monkeypatch, capsys):
    """The page shows each unreadable picture as unavailable; the command also says how many,
    so that a report written while a store was unreachable does not pass for a good one."""
    for var in ("POUNDCAM_LOCAL_ROOT", "POUNDCAM_HEATMAP_BUCKET", "POUNDCAM_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    common = [
        "report",
        processed_job["job_id"],
        "--db",
        processed_job["db_url"],
        "--out",
        str(tmp_path / "r.html"),
    ]
    assert main(common) == 0
    err = capsys.readouterr().err
    assert "warning" not in err and re.search(r"\b4/4 \[", err)  # the progress bar, finished
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.setenv("POUNDCAM_ALLOWED_ROOTS", str(tmp_path / "elsewhere"))  # originals out of reach
    for mode in ("embed", "presigned"):  # presigned: the drawn panels are embedded all the same
        assert main([*common, "--images", mode]) == 0
        err = capsys.readouterr().err
        (line,) = [ln for ln in err.splitlines() if ln.startswith("poundcam report: warning")]
        n = int(re.search(r"warning: (\d+) pictures failed: ", line).group(1))
        assert 0 < n <= (tmp_path / "r.html").read_text().count('<div class="missing"'), mode
        assert "; the first: " in line
        # the progress bar counts what the closing line counts, not the items ("0 failed")
        assert re.findall(r"4/4 \[.*?(\d+) pictures failed\]", err)[-1] == str(n), err


def test_out_is_a_file_or_a_folder_checked_before_the_work(processed_job, tmp_path, monkeypatch, capsys):
    """--out an existing folder, or a path ending with /, gets report-JOB.html inside it (the
    folders made); a folder where the file would go, or a file where a folder would, is one
    line and exit 2 at once: no picture read, nothing written."""
    for var in ("POUNDCAM_LOCAL_ROOT", "POUNDCAM_HEATMAP_BUCKET", "POUNDCAM_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    job = processed_job["job_id"]
    common = ["report", job, "--db", processed_job["db_url"], "--out"]
    (tmp_path / "emptydir").mkdir()
    assert main([*common, str(tmp_path / "emptydir")]) == 0
    assert f"wrote {tmp_path / 'emptydir' / f'report-{job}.html'}: 4 items" in capsys.readouterr().out
    assert main([*common, f"{tmp_path / 'new' / 'reports'}/"]) == 0
    assert (tmp_path / "new" / "reports" / f"report-{job}.html").is_file()
    capsys.readouterr()
    (tmp_path / "file").write_text("")
    (tmp_path / "taken" / f"report-{job}.html").mkdir(parents=True)
    before = sorted(tmp_path.rglob("*"))
    for out, says in (
        (str(tmp_path / "file" / "r.html"), f"{tmp_path / 'file'} is not a folder"),
        (f"{tmp_path / 'taken'}/", f"report-{job}.html: is a folder"),
    ):
        assert main([*common, out]) == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(err) == 1 and err[0].startswith("poundcam: error: ") and says in err[0], err  # no bar
    assert sorted(tmp_path.rglob("*")) == before


def test_report_command_with_s3(
    processed_job, job_rows, s3_client, s3_server, bucket, tmp_path, monkeypatch, capsys
):
    """Heatmaps in the S3 server: embedded, and presigned URLs that open and expire."""
    keys = {k for r in job_rows for k in (r["heatmap_keys"] or {}).values() if not k.startswith("rendered:")}
    for key in keys:
        s3_client.put_object(Bucket=bucket, Key=key, Body=(processed_job["heatmaps"] / key).read_bytes())
    monkeypatch.delenv("POUNDCAM_LOCAL_ROOT", raising=False)
    monkeypatch.setenv("POUNDCAM_S3_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("POUNDCAM_HEATMAP_BUCKET", bucket)
    monkeypatch.setenv("POUNDCAM_DATABASE_URL", processed_job["db_url"])
    job = processed_job["job_id"]

    out = tmp_path / "embedded.html"
    assert main(["report", job, "--out", str(out)]) == 0
    assert [n for n, _ in thumbs(out.read_text())] == list(PANELS) * 3

    out = tmp_path / "linked.html"
    assert main(["report", job, "--out", str(out), "--images", "presigned", "--expires", "600"]) == 0
    assert "expiring in 600 s" in capsys.readouterr().out
    page = out.read_text()
    srcs = [u.replace("&amp;", "&") for _, u in thumbs(page)]
    # the overlays are drawn from the stored maps, so there is nothing to link: embedded
    assert len(srcs) == 6 and all(u.startswith("data:image/webp;base64,") for u in srcs)
    # the one stored heatmap per image is what a presigned URL would point to
    from poundcam.commands.review import heatmap_store

    url = heatmap_store(Settings.from_env()).presigned_url(keys_of(job_rows)[0], 600)
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read(8) == b"\x89PNG\r\n\x1a\n"

    assert main(["report", job, "--out", str(out), "--expires", "0"]) == 2
    assert main(["report", "no-such-job", "--out", str(out)]) == 2


def keys_of(rows) -> list[str]:
    """The stored heatmap key of each analysed row, in order."""
    return [k for r in rows for k in (r["heatmap_keys"] or {}).values() if not k.startswith("rendered:")]


def test_templates_ship_as_package_data():
    """Every file the report renders from is named by pyproject.toml's package-data, so an
    installed wheel has them."""
    import fnmatch
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parents[2]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "poundcam.report"
    ]
    files = [
        p.relative_to(root / "poundcam" / "report").as_posix()
        for p in (root / "poundcam" / "report" / "templates").iterdir()
    ]
    assert files and all(any(fnmatch.fnmatch(f, g) for g in globs) for f in files), files
