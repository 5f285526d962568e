"""The report's markup without a browser: controls and data attributes for sorting and
filtering, escaping of untrusted strings, no external resources, a CSP that admits only the
page's own script, unreadable heatmaps shown as errors; and the command against the S3 server
with embedded and presigned images."""
from __future__ import annotations

import base64
import hashlib
import re
import time
import urllib.request
from urllib.parse import parse_qs, urlparse

import pytest

from poundcam import client
from poundcam.cli import main
from poundcam.report.build import _JS, build_report
from poundcam.settings import Settings
from poundcam.storage import LocalStore, StorageError

HOSTILE_NAME = 'x"><img src=x onerror=alert(1)>.png'  # as in conftest.py


@pytest.fixture(scope="module")
def job_rows(processed_job):
    return client.results(processed_job["job_id"],
                          settings=Settings.from_env(database_url=processed_job["db_url"]))


@pytest.fixture(scope="module")
def local_fetch(processed_job):
    store = LocalStore(processed_job["heatmaps"])
    return lambda key: store.get(store.uri_for(key))


def test_sorting_and_filtering_markup(job_rows, local_fetch):
    page = build_report(job_rows, local_fetch, job_id="j1")
    assert 'id="filter-label"' in page and 'id="filter-min-p"' in page
    assert 'id="filter-max-p"' in page
    for value in ("all", "fake", "real", "failed", "pending"):
        assert f'<option value="{value}">' in page
    assert 'data-sort="position"' in page and 'data-sort="p_fake"' in page
    items = re.findall(r'<tr class="item[^"]*" data-position="(\d+)" data-status="(\w+)" '
                       r'data-label="(\w*)" data-p-fake="([0-9.]*)">', page)
    assert [int(i[0]) for i in items] == [r["position"] for r in job_rows]
    for (pos, status, label, p), row in zip(items, job_rows):
        assert status == row["status"]
        if status == "done":
            assert label == row["label"] and float(p) == pytest.approx(row["p_fake"], abs=1e-6)
        else:
            assert label == "" and p == ""


def test_untrusted_strings_are_escaped_and_nothing_is_external(job_rows, local_fetch):
    rows = [dict(r) for r in job_rows]
    failed = next(r for r in rows if r["status"] == "failed")
    failed["error_message"] = "</td><script>alert('x')</script>"
    page = build_report(rows, local_fetch, job_id='"><b>job</b>')
    assert "<script>alert" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)" in page
    assert HOSTILE_NAME not in page
    assert "x&quot;&gt;&lt;img src=x onerror=alert(1)&gt;.png" in page
    assert "<b>job</b>" not in page
    assert page.count("<script") == 1  # the page's own
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert "<a " not in page  # URIs are text, never links
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    digest = base64.b64encode(hashlib.sha256(_JS.encode()).digest()).decode()
    assert f"script-src &#x27;sha256-{digest}&#x27;" in csp
    assert "default-src &#x27;none&#x27;" in csp and "img-src data:;" in csp
    srcs = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(srcs) == 9 and all(s.startswith("data:image/png;base64,iVBORw0KGgo") for s in srcs)


def test_unreadable_heatmaps_are_errors_not_pictures(job_rows):
    def fetch(key):
        if key.endswith("/fake_overlay.png"):
            raise StorageError("not_found", f"{key}: no such file")
        return b"GIF89a not a png"

    page = build_report(job_rows, fetch)
    assert "<img" not in page
    assert page.count('data-error="not_found"') == 3
    assert page.count("heatmap unavailable: not a PNG file") == 6
    with pytest.raises(ValueError):
        build_report(job_rows)


def test_link_mode_checks_url_schemes(job_rows):
    page = build_report(job_rows, image_url=lambda k: "javascript:alert(1)//" + k)
    assert "javascript:" not in page.split("<tbody", 1)[1].split("<script>", 1)[0]
    assert page.count("refused an image URL with scheme") == 9
    page = build_report(job_rows, image_url=lambda k: f"https://h.example/{k}?sig=a&x=1")
    assert 'src="https://h.example/' in page and "sig=a&amp;x=1" in page
    assert "img-src data: https:;" in page


def test_report_command_with_s3(processed_job, job_rows, s3_client, s3_server, bucket,
                                tmp_path, monkeypatch, capsys):
    """Heatmaps in the S3 server: embedded, and presigned URLs that open and expire."""
    keys = {k for r in job_rows for k in (r["heatmap_keys"] or {}).values()}
    for key in keys:
        s3_client.put_object(Bucket=bucket, Key=key,
                             Body=(processed_job["heatmaps"] / key).read_bytes())
    monkeypatch.delenv("POUNDCAM_LOCAL_ROOT", raising=False)
    monkeypatch.setenv("POUNDCAM_S3_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("POUNDCAM_HEATMAP_BUCKET", bucket)
    monkeypatch.setenv("POUNDCAM_DATABASE_URL", processed_job["db_url"])
    job = processed_job["job_id"]

    out = tmp_path / "embedded.html"
    assert main(["report", job, "--out", str(out)]) == 0
    page = out.read_text()
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 9

    out = tmp_path / "linked.html"
    assert main(["report", job, "--out", str(out), "--images", "presigned",
                 "--expires", "600"]) == 0
    assert "expiring in 600 s" in capsys.readouterr().out
    page = out.read_text()
    urls = [u.replace("&amp;", "&") for u in re.findall(r'<img [^>]*src="([^"]+)"', page)]
    assert len(urls) == 9 and all(u.startswith(s3_server + "/") for u in urls)
    for u in urls:  # SigV4 (X-Amz-Expires: seconds) or the legacy form (Expires: epoch)
        q = parse_qs(urlparse(u).query)
        if "X-Amz-Expires" in q:
            assert q["X-Amz-Expires"] == ["600"]
        else:
            assert abs(int(q["Expires"][0]) - (time.time() + 600)) < 120
    assert "img-src data: http:;" in page
    with urllib.request.urlopen(urls[0], timeout=10) as resp:
        assert resp.read(8) == b"\x89PNG\r\n\x1a\n"

    assert main(["report", job, "--out", str(out), "--expires", "0"]) == 2
    assert main(["report", "no-such-job", "--out", str(out)]) == 2
