"""``poundcam analyze``: the embedded mode (SQLite + a local folder, no Redis, no S3) as a
user runs it, in a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from . import corpus
from .conftest import poundcam_cmd

pytestmark = pytest.mark.integration

HEATMAPS = ("comparative",)  # one file per analysed image


def analyze(*args: str, cwd: Path, weights: Path, **extra_env: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POUNDCAM_")}
    return subprocess.run(
        poundcam_cmd() + ["analyze", *args, "--device", "cpu", "--weights", str(weights)],
        cwd=cwd,
        env={**env, **extra_env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def analyses(db_url: str) -> dict[str, int]:
    import sqlalchemy as sa

    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(sa.text("SELECT sha256, count(*) FROM analyses GROUP BY sha256")).all())
    finally:
        engine.dispose()


def test_analyze_folder_exit_codes_summary_heatmaps_and_rerun(tmp_path, official_dir):
    images = tmp_path / "images"
    good_dir = images / "good"
    good_dir.mkdir(parents=True)
    good = dict(list(corpus.good_images(seed=3).items())[:4])
    good["fixture.png"] = (official_dir / "images" / "img2.png").read_bytes()
    for name, data in good.items():
        (good_dir / name).write_bytes(data)
    bad = corpus.bad_images(seed=3)
    # named like images, so that the folder walk picks them up
    bad_files = {
        "page.png": bad["page.html"],
        "empty.jpg": bad["empty.png"],
        "truncated.jpg": bad["truncated.jpg"],
        "vector.png": bad["drawing.svg"],
    }
    codes = {
        "page.png": "not_an_image",
        "empty.jpg": "empty",
        "truncated.jpg": "truncated",
        "vector.png": "not_an_image",
    }
    for name, (data, _code) in bad_files.items():
        (images / name).write_bytes(data)
    db_url = f"sqlite:///{tmp_path / 'results.db'}"
    out = tmp_path / "heatmaps"
    weights = official_dir / "last.ckpt"

    mixed = analyze(str(images), "--db", db_url, "--out", str(out), cwd=tmp_path, weights=weights)
    assert mixed.returncode == 1, mixed.stderr
    n = len(good) + len(bad_files)
    assert f"{len(good)}/{n} analysed" in mixed.stdout and f"{len(bad_files)} failed" in mixed.stdout
    for name, code in codes.items():
        line = next(ln for ln in mixed.stdout.splitlines() if name in ln)
        assert "failed" in line and code in line, line
    assert f"{n}/{n}" in mixed.stderr  # the progress line reached the end

    shas = {hashlib.sha256(d).hexdigest() for d in good.values()}
    assert analyses(db_url) == {sha: 1 for sha in shas}
    written = {p.relative_to(out) for p in out.rglob("*.png")}
    assert len(written) == len(HEATMAPS) * len(good)
    for sha in shas:
        assert {p.stem for p in written if sha in p.parts} == set(HEATMAPS)
    for p in out.rglob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "poundcam.db").exists()  # --db was honoured

    rerun = analyze(str(good_dir), "--db", db_url, "--out", str(out), cwd=tmp_path, weights=weights)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(good)}/{len(good)} analysed" in rerun.stdout and "0 failed" in rerun.stdout
    assert analyses(db_url) == {sha: 1 for sha in shas}  # nothing new
    assert {p.relative_to(out) for p in out.rglob("*.png")} == written

    # The analyses are reused, but the decision is this run's: at a threshold under every
    # image's P(fake), every image is labelled fake
    first = {
        r["uri"]: r
        for r in json.loads(
            analyze(str(good_dir), "--db", db_url, "--json", cwd=tmp_path, weights=weights).stdout
        )["results"]
    }
    low = min(r["p_fake"] for r in first.values()) / 2
    lowered = analyze(
        str(good_dir), "--db", db_url, "--json", "--threshold", repr(low), cwd=tmp_path, weights=weights
    )
    assert lowered.returncode == 0, lowered.stderr
    results = json.loads(lowered.stdout)["results"]
    assert analyses(db_url) == {sha: 1 for sha in shas}  # still nothing new
    assert [(r["label"], r["threshold"]) for r in results] == [("fake", low)] * len(good)


def test_analyze_reads_only_under_the_allowed_roots_links_alike(tmp_path, official_dir):
    """A symlinked file and a symlinked folder are read when they point inside the allowed
    roots and skipped, with their reason, when they point outside; with the roots set
    (POUNDCAM_ALLOWED_ROOTS) or not (the paths given). Nothing outside is read."""
    images = list(corpus.good_images(seed=5).values())[:3]
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "sub").mkdir(parents=True)
    (outside / "d").mkdir(parents=True)
    (allowed / "sub" / "in.png").write_bytes(images[0])
    (outside / "o.png").write_bytes(images[1])
    (outside / "d" / "od.png").write_bytes(images[2])
    (allowed / "link-in.png").symlink_to(allowed / "sub" / "in.png")
    (allowed / "dir-in").symlink_to(allowed / "sub")
    (allowed / "link-out.png").symlink_to(outside / "o.png")
    (allowed / "dir-out").symlink_to(outside / "d")
    weights = official_dir / "last.ckpt"

    for extra, roots_env in ((("outside/o.png",), {"POUNDCAM_ALLOWED_ROOTS": str(allowed)}), ((), {})):
        db_url = f"sqlite:///{tmp_path / f'results{len(roots_env)}.db'}"
        proc = analyze(
            "allowed",
            *extra,
            "--json",
            "--db",
            db_url,
            "--out",
            str(tmp_path / "heatmaps"),
            cwd=tmp_path,
            weights=weights,
            **roots_env,
        )
        assert proc.returncode == 1, proc.stderr  # something was skipped
        assert "Traceback" not in proc.stderr
        doc = json.loads(proc.stdout)
        assert [(r["uri"], r["status"]) for r in doc["results"]] == [
            (str(allowed / "sub" / "in.png"), "done")
        ]  # once, through three paths
        assert {(k["path"], k["code"]) for k in doc["skipped"]} == {
            ("allowed/dir-out", "uri_not_allowed"),
            ("allowed/link-out.png", "uri_not_allowed"),
            *((p, "uri_not_allowed") for p in extra),
        }
        for k in doc["skipped"]:
            assert f"poundcam analyze: skipped (uri_not_allowed) {k['reason']}" in proc.stderr
        assert analyses(db_url) == {hashlib.sha256(images[0]).hexdigest(): 1}
