"""The Grafana dashboard and the Prometheus alert rules in deploy/monitoring, read as
an operator's Prometheus would: every PromQL expression and the metrics it names."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

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
