"""``poundcam explain JOB|ANALYSIS``: the deep maps of a job's analyses computed on demand, from
the images read again, stored into the analysis rows; one line per analysis, errors included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from poundcam.cli import main


@pytest.fixture
def analysed(tmp_path, official_dir, capsys):
    """Three images analysed by the embedded ``poundcam analyze`` (no deep maps)."""
    import json

    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(7)
    for i, (w, h) in enumerate(((200, 160), (180, 240), (256, 256))):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / f"{i}.png")
    db = f"sqlite:///{tmp_path / 'poundcam.db'}"
    ckpt = str(official_dir / "last.ckpt")
    rc = main(
        [
            "analyze",
            str(images),
            "--db",
            db,
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--weights",
            ckpt,
            "--json",
        ]
    )
    assert rc == 0
    job = json.loads(capsys.readouterr().out)["job_id"]
    return {"job": job, "db": db, "ckpt": ckpt, "images": images}


def _rows(db: str) -> dict:
    from poundcam.db import analyses_for_rendering, make_session_factory, session_scope

    sessions = make_session_factory(db)
    try:
        with session_scope(sessions) as s:
            import sqlalchemy as sa

            from poundcam.db import Analysis

            ids = s.execute(sa.select(Analysis.id)).scalars().all()
            return {i: analyses_for_rendering(s, str(i))[0] for i in ids}
    finally:
        sessions.kw["bind"].dispose()


def test_explain_a_job_stores_the_relevance_maps(analysed, official_model, capsys):
    from poundcam.cam import ComparativeCAM
    from poundcam.preprocess.decode import decode_image
    from poundcam.preprocess.transform import preprocess

    before = _rows(analysed["db"])
    assert len(before) == 3 and all(r["deep_real_map"] is None for r in before.values())
    argv = [
        "explain",
        analysed["job"],
        "--db",
        analysed["db"],
        "--weights",
        analysed["ckpt"],
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert sorted(out) == sorted(
        f"analysis {i}: deep maps stored ({r['real_map'].shape[0]}x"
        f"{r['real_map'].shape[0]}, P(fake) {r['p_fake']:.3f})"
        for i, r in before.items()
    )
    after = _rows(analysed["db"])
    x = torch.stack([preprocess(decode_image(Path(r["uri"]).read_bytes()).image) for r in after.values()])
    ref = ComparativeCAM(official_model, method="relevance").attribute(x)
    for k, r in enumerate(after.values()):
        assert np.allclose(r["deep_real_map"], ref.real[k].numpy(), rtol=1e-5, atol=1e-5)
        assert np.allclose(r["deep_fake_map"], ref.fake[k].numpy(), rtol=1e-5, atol=1e-5)
        assert np.array_equal(r["real_map"], before[r["analysis_id"]]["real_map"])
        assert r["cam_config_id"] == before[r["analysis_id"]]["cam_config_id"]

    # a second run keeps them, without loading the model
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.count("deep maps stored before, kept") == 3
    assert "loading model" not in captured.err


def test_one_line_per_failure_and_the_others_go_on(analysed, capsys):
    (analysed["images"] / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n changed since")
    rows = _rows(analysed["db"])
    changed = next(i for i, r in rows.items() if r["uri"].endswith("1.png"))
    rc = main(
        ["explain", analysed["job"], "--db", analysed["db"], "--weights", analysed["ckpt"], "--device", "cpu"]
    )
    assert rc == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("analysis")]
    assert errors == [
        f"analysis {changed}: error: source_changed: {rows[changed]['uri']}: not the analysed image any more"
    ]
    assert "Traceback" not in captured.err
    assert captured.out.count("deep maps stored (") == 2
    after = _rows(analysed["db"])
    assert after[changed]["deep_real_map"] is None
    assert all(r["deep_real_map"] is not None for i, r in after.items() if i != changed)


def test_unknown_target_and_another_model(analysed, tmp_path, capsys):
    assert main(["explain", "999999", "--db", analysed["db"], "--weights", analysed["ckpt"]]) == 2
    assert capsys.readouterr().err.strip() == "poundcam: error: no analysis or job '999999'"

    from poundcam.model.checkpoint import export_safetensors
    from poundcam.model.random_weights import TINY_CONFIG, random_poundnet

    other = export_safetensors(random_poundnet(5, **TINY_CONFIG), tmp_path / "other.safetensors")
    rows = _rows(analysed["db"])
    first = min(rows)
    rc = main(["explain", str(first), "--db", analysed["db"], "--weights", str(other), "--device", "cpu"])
    assert rc == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("analysis")]
    assert len(err) == 1 and err[0].startswith(
        f"analysis {first}: error: model_mismatch: analysed by model {rows[first]['model_id']}"
    )


def test_the_report_shows_the_deep_maps_once_explained(analysed, tmp_path, capsys):
    import re

    page = tmp_path / "report.html"
    common = ["--db", analysed["db"], "--out", str(page)]
    assert main(["report", analysed["job"], *common]) == 0
    assert 'data-panel="deep_fake_overlay"' not in page.read_text()

    rows = _rows(analysed["db"])
    first = min(rows)
    assert (
        main(
            ["explain", str(first), "--db", analysed["db"], "--weights", analysed["ckpt"], "--device", "cpu"]
        )
        == 0
    )
    assert main(["report", analysed["job"], *common]) == 0
    html = page.read_text()
    # one item has them: both deep overlays drawn (embedded pictures), the others none
    for name in ("deep_fake_overlay", "deep_real_overlay"):
        thumbs = re.findall(rf'<img class="thumb" data-panel="{name}" data-src="([^"]+)"', html)
        assert len(thumbs) == 1 and thumbs[0].startswith("data:image/")
    assert 'class="missing"' not in html
    capsys.readouterr()
