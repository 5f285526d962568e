"""Fixtures of the review tests: a database URL on both backends and a stats record shaped like
the ones the analysis path writes."""

from __future__ import annotations

import pytest

OFFICIAL_CKPT = "last.ckpt"
HOSTILE_NAME = 'x"><img src=x onerror=alert(1)>.png'


@pytest.fixture(scope="module")
def processed_job(tmp_path_factory, official_dir):
    """A job processed by the embedded ``poundcam analyze`` with the official tiny checkpoint:
    three images (one with HTML in its file name) and a file that is not an image.
    Returns ``{"job_id", "db_url", "heatmaps", "images"}``."""
    import json

    import numpy as np
    from PIL import Image

    from poundcam.cli import main

    root = tmp_path_factory.mktemp("processed")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    # a photograph (matplotlib's sample portrait), so that a screenshot shows what a reviewer
    # would recognise, and two noise images
    from matplotlib import cbook

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as photo:
        photo.convert("RGB").crop((0, 0, 512, 384)).resize((320, 240)).save(images / "a.png")
    for name, (w, h) in (("b.jpg", (200, 300)), (HOSTILE_NAME, (256, 256))):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            images / name, format="PNG" if name.endswith(".png") else "JPEG"
        )
    (images / "broken.jpg").write_bytes(b"not an image")
    db_url = f"sqlite:///{root / 'poundcam.db'}"
    out = root / "heatmaps"
    json_out = root / "analyze.json"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(
            [
                "analyze",
                str(images),
                "--db",
                db_url,
                "--out",
                str(out),
                "--device",
                "cpu",
                "--weights",
                str(official_dir / OFFICIAL_CKPT),
                "--json",
            ]
        )
    assert rc == 1  # one item failed: the file that is not an image
    json_out.write_text(buf.getvalue())
    job_id = json.loads(buf.getvalue())["job_id"]
    return {"job_id": job_id, "db_url": db_url, "heatmaps": out, "images": images}


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Debian ``chromium`` binary. Missing: the test fails when POUNDCAM_REQUIRE_CHROMIUM=1
    (CI, where the set-up installs it), and is skipped otherwise."""
    import os
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        msg = "chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("POUNDCAM_REQUIRE_CHROMIUM") == "1":
            pytest.fail(msg + " and POUNDCAM_REQUIRE_CHROMIUM=1")
        pytest.skip(msg)
    return path
