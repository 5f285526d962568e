"""ops/grafana/poundcam-dashboard.json: loads, and its queries use exactly the metrics the code
exports (the worker's and the queue exporter's, collected from real registries)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

DASHBOARD = Path(__file__).resolve().parents[2] / "ops" / "grafana" / "poundcam-dashboard.json"


def exported_metrics(redis_url: str) -> dict[str, str]:
    """``{name: type}`` of what the code exports: a WorkerMetrics and a QueueCollector (on a
    real Redis, a queue name nobody uses) collected from a registry of their own."""
    import uuid

    from prometheus_client import CollectorRegistry

    from poundcam.metrics import QueueCollector, WorkerMetrics

    registry = CollectorRegistry()
    WorkerMetrics(registry)
    registry.register(QueueCollector(redis_url, queue=f"poundcam-test-{uuid.uuid4().hex}"))
    return {f.name + ("_total" if f.type == "counter" else ""): f.type for f in registry.collect()}


@pytest.fixture(scope="module")
def METRICS(redis_url):  # noqa: N802 - the table the tests below read
    from poundcam.metrics import METRIC_TYPES

    exported = exported_metrics(redis_url)
    assert exported == METRIC_TYPES  # the documented table is what the code exports
    return exported


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


def test_queries_use_only_the_exported_metrics_and_all_of_them(dashboard, METRICS):  # noqa: N803
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
            if name.endswith("_total") or name.endswith("_bucket"):
                assert re.search(r"rate\(" + name, expr), expr
            if name.endswith("_bucket"):
                assert "histogram_quantile" in expr and "by (le)" in expr, expr


def test_labels_in_queries_are_the_exported_ones(dashboard):
    labels = {"outcome", "error_code", "model_id", "cam_config", "reason", "le", "instance"}
    for expr in _exprs(dashboard):
        for group in re.findall(r"by \(([^)]*)\)", expr):
            assert {x.strip() for x in group.split(",")} <= labels, expr
        for name in re.findall(r"\{([^}]*)\}", expr):
            for label in re.findall(r"(\w+)\s*(?:=~|!=|=)", name):
                assert label in labels, expr


def test_throughput_is_a_rate_of_a_counter_and_queue_and_workers_have_panels(dashboard):
    by_title = {p["title"]: [t["expr"] for t in p["targets"]] for p in dashboard["panels"]}
    assert by_title["Images/s analysed (fleet)"] == [
        'sum(rate(poundcam_images_analyzed_total{instance=~"$instance"}[$__rate_interval]))'
    ]
    assert any("poundcam_queue_messages" in e for e in by_title["Queue depth"])
    assert any(e.startswith("count(poundcam_model_info") for e in by_title["Workers"])
