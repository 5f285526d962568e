"""The commands work together: ``jobs`` lists what ``submit`` made, ``--db`` selects the
database of every command that reads one, ``results --format json`` has the shape of
``analyze --json``, and the CSV carries the error message."""

from __future__ import annotations

import csv
import io
import json

import pytest

from poundcam.cli import build_parser, main
from poundcam.db import create_job, item_refs, make_session_factory, mark_failed, mark_running, session_scope
from poundcam.db.migrate import upgrade

READERS = ("status", "results", "resend", "submit", "report", "jobs", "analyze", "sweep", "explain", "db")


@pytest.fixture
def job(sqlite_url):
    upgrade(sqlite_url)
    factory = make_session_factory(sqlite_url)
    with session_scope(factory) as s:
        job_id = create_job(s, ["s3://images/a.jpg", "s3://images/b.jpg"])
        first = item_refs(s, job_id)[0]["item_id"]
        mark_running(s, [first])
        mark_failed(s, first, "not_an_image", 'no image format recognised, "quoted", line\nbreak')
    factory.kw["bind"].dispose()
    return job_id


@pytest.mark.parametrize("command", READERS)
def test_every_reading_command_takes_db(command):
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert "--db" in sub.choices[command]._option_string_actions


def test_jobs_lists_the_job_with_counts(job, sqlite_url, capsys):
    assert main(["jobs", "--db", sqlite_url, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(j["job_id"], j["total"], j["failed"], j["queued"], j["finished"]) for j in listed] == [
        (job, 2, 1, 1, False)
    ]
    assert main(["jobs", "--db", sqlite_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["job_id", "created_at", "mode", "total"]
    assert lines[1].startswith(job) and len(lines) == 2


def test_results_json_has_the_analyze_shape_and_csv_the_message(job, sqlite_url, capsys):
    from poundcam.db import RESULT_FIELDS

    assert main(["results", job, "--db", sqlite_url, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"job_id", "results"} and doc["job_id"] == job
    assert [tuple(r) for r in doc["results"]] == [RESULT_FIELDS] * 2
    assert main(["results", job, "--db", sqlite_url, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[0]["error_code"] == "not_an_image"
    assert rows[0]["error_message"] == 'no image format recognised, "quoted", line\nbreak'
    assert rows[1]["error_message"] == "" and rows[1]["status"] == "queued"


def test_status_wait_times_out_with_exit_75(job, sqlite_url, capsys):
    assert main(["status", job, "--db", sqlite_url, "--wait", "0.2"]) == 75
    err = capsys.readouterr().err
    assert "not finished after 0.2 s" in err
    assert "1/2 [" in err and "1 failed" in err  # the progress bar: one item settled, failed
