"""The faithfulness tables in docs/ are what the evaluation's report writes from the results
beside them (docs/faithfulness/**/results.json, copied there by the full profile's run): a
change to the report, or a hand edit of a table, shows here until the tables are written
again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.faithfulness.report import markdown

DOCS = Path(__file__).resolve().parents[2] / "docs" / "faithfulness"
FOLDERS = sorted(p.parent for p in DOCS.rglob("results.json"))


def test_every_artifact_keeps_its_results():
    assert {DOCS, DOCS / "sensor-splice", DOCS / "watermark"} == set(FOLDERS)


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.relative_to(DOCS).as_posix() or "up-sampling")
def test_the_docs_tables_are_what_the_report_writes_from_their_results(folder):
    res = json.loads((folder / "results.json").read_text())
    assert markdown(res) == (folder / "tables.md").read_text()
