"""ops/grafana/poundcam-dashboard.json: loads, and its queries use exactly the worker's metrics."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

DASHBOARD = Path(__file__).resolve().parents[2] / "ops" / "grafana" / "poundcam-dashboard.json"
METRICS = {  # name -> type, as poundcam/metrics.py exports them
    "poundcam_items_total": "counter",
    "poundcam_batch_seconds": "histogram",
    "poundcam_queue_wait_seconds": "histogram",
    "poundcam_images_per_second": "gauge",
    "poundcam_gpu_memory_bytes": "gauge",
    "poundcam_model_info": "gauge",
}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _exprs(dashboard):
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_dashboard_identity_and_panels(dashboard):
    assert dashboard["uid"] == "poundcam-workers" and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for p in dashboard["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"panel {p['title']!r} overlaps another"
        cells |= mine
        assert p["datasource"]["uid"] == "${datasource}" and p["targets"]


def test_queries_use_only_the_exported_metrics_and_all_of_them(dashboard):
    used = set()
    for expr in _exprs(dashboard):
        for name in re.findall(r"\bpoundcam_\w+", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert base in METRICS, f"unknown metric {name} in {expr}"
            if name != base:
                assert METRICS[base] == "histogram", name
            used.add(base)
    assert used == set(METRICS)


def test_counters_and_histograms_are_read_as_rates(dashboard):
    for expr in _exprs(dashboard):
        for name in re.findall(r"\bpoundcam_\w+", expr):
            if name == "poundcam_items_total" or name.endswith("_bucket"):
                assert re.search(r"rate\(" + name, expr), expr
            if name.endswith("_bucket"):
                assert "histogram_quantile" in expr and "by (le)" in expr, expr


def test_labels_in_queries_are_the_exported_ones(dashboard):
    labels = {"outcome", "error_code", "model_id", "cam_config", "le", "instance"}
    for expr in _exprs(dashboard):
        for group in re.findall(r"by \(([^)]*)\)", expr):
            assert {x.strip() for x in group.split(",")} <= labels, expr
        for name in re.findall(r"\{([^}]*)\}", expr):
            for label in re.findall(r"(\w+)\s*(?:=~|!=|=)", name):
                assert label in labels, expr
