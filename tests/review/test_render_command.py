"""``poundcam render ANALYSIS|JOB``: the files drawn from the stored maps, for a job and for one
analysis; the embedded mode's one object per image is the comparative heatmap drawn again."""

from __future__ import annotations

import pytest

from poundcam import client
from poundcam.cam.ondemand import RENDERINGS
from poundcam.cli import main
from poundcam.settings import Settings


@pytest.fixture(scope="module")
def done_rows(processed_job):
    rows = client.results(
        processed_job["job_id"], settings=Settings.from_env(database_url=processed_job["db_url"])
    )
    return [r for r in rows if r["status"] == "done"]


def test_render_a_job(processed_job, done_rows, tmp_path, capsys):
    out = tmp_path / "drawn"
    rc = main(["render", processed_job["job_id"], "--out", str(out), "--db", processed_job["db_url"]])
    assert rc == 0, capsys.readouterr().err
    assert f"drew {len(done_rows)} of {len(done_rows)} analyses" in capsys.readouterr().out
    for row in done_rows:
        files = {p.stem: p.read_bytes() for p in (out / str(row["analysis_id"])).glob("*.png")}
        assert set(files) == set(RENDERINGS)
        # the embedded mode wrote one object per image; drawn again, it is the same file
        (key,) = row["heatmap_keys"].values()
        assert files["comparative"] == (processed_job["heatmaps"] / key).read_bytes()
        stored = list((processed_job["heatmaps"]).rglob(f"*{row['sha256']}*/*.png"))
        assert [p.name for p in stored] == ["comparative.png"]


def test_render_one_analysis_maps_only(processed_job, done_rows, tmp_path, capsys):
    analysis = str(done_rows[0]["analysis_id"])
    rc = main(
        [
            "render",
            analysis,
            "--out",
            str(tmp_path),
            "--only",
            "real_raw16,fake_raw16",
            "--db",
            processed_job["db_url"],
        ]
    )
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / analysis).iterdir()) == ["fake_raw16.png", "real_raw16.png"]
    assert main(["render", "999999", "--out", str(tmp_path), "--db", processed_job["db_url"]]) == 2
    assert "no analysis or job" in capsys.readouterr().err
    assert main(["render", analysis, "--only", "sepia", "--db", processed_job["db_url"]]) == 2


@pytest.mark.parametrize(
    ("only", "says"),
    [("sepia,real_raw16", "unknown file name(s) sepia; choose from real_overlay, "), (",", "no file name; ")],
)
def test_an_unknown_file_name_is_the_common_one_line_error_before_the_database(tmp_path, capsys, only, says):
    db = tmp_path / "absent.db"
    assert main(["render", "1", "--only", only, "--db", f"sqlite:///{db}", "--out", str(tmp_path / "o")]) == 2
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert line.startswith(f"poundcam: error: --only {only!r}: ") and says in line
    assert list(tmp_path.iterdir()) == []  # no database, no folder


def test_a_changed_source_is_not_drawn(processed_job, done_rows, tmp_path, capsys):
    from poundcam.commands.render import Renderer, RenderError
    from poundcam.db import analyses_for_rendering, make_session_factory, session_scope

    sessions = make_session_factory(processed_job["db_url"])
    with session_scope(sessions) as s:
        (record,) = analyses_for_rendering(s, str(done_rows[0]["analysis_id"]))
    sessions.kw["bind"].dispose()
    other = tmp_path / "other.png"
    other.write_bytes(b"\x89PNG\r\n\x1a\n not the analysed image")
    with pytest.raises(RenderError) as err:
        Renderer(Settings.from_env()).render({**record, "uri": str(other)})
    assert err.value.code == "source_changed"
