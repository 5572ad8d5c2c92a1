"""The Grafana dashboard and the Prometheus alert rules in deploy/monitoring, read as
an operator's Prometheus would: every PromQL expression and the metrics it names."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.service import Live

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
ALERTS = MONITORING / "alerts.yml"

_METRIC = re.compile(r"\bonair_[a-z0-9_]+\b")


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    return [
        target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])
    ]


def queried_metrics() -> set[str]:
    """Every sample name (`onair_*`) the dashboard and the alert rules query."""
    expressions = dashboard_expressions() + [rule["expr"] for rule in alert_rules()]
    return {name for expr in expressions for name in _METRIC.findall(expr)}


# The series of a live's restreams (there only while it has some).
RESTREAM_SERIES = {
    "onair_restream_state",
    "onair_restream_sent_bytes_total",
    "onair_restream_reconnects_total",
    "onair_restream_dropped_packets_total",
}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(live: Live) -> Samples:
    """`/metrics`, parsed: (sample name, sorted labels) -> value."""
    async with live.session.get(live.server.make_url("/metrics")) as response:
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
