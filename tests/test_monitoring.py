"""deploy/monitoring: the dashboard and the alert rules are well formed and query only
onair's metrics (that each exists on a running live's /metrics is checked in
tests/test_live_e2e.py)."""

from __future__ import annotations

import re

from tests.support.monitoring import alert_rules, dashboard, dashboard_expressions

DURATION = re.compile(r"[0-9]+[smh]")


def test_the_dashboard_has_its_panels_and_a_live_job_variable() -> None:
    board = dashboard()
    variables = {v["name"] for v in board["templating"]["list"]}
    assert variables == {"datasource", "live_job"}
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    titles = {p["title"] for p in panels}
    for wanted in ("Lives running", "Input bitrate", "Output bitrate by rendition",
                   "Frames dropped by reason", "Upload latency", "Spool used (host)",
                   "Admissions refused"):  # fmt: skip
        assert wanted in titles
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        width = panel["gridPos"]["x"] + panel["gridPos"]["w"]
        assert width <= 24, panel["title"]


def test_every_expression_is_balanced_and_names_an_onair_metric() -> None:
    for expr in dashboard_expressions() + [rule["expr"] for rule in alert_rules()]:
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}")
        assert "onair_" in expr, expr


def test_the_alert_rules_cover_what_an_operator_is_paged_for() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert {"OnairUploadsFailing", "OnairSpoolAlmostFull", "OnairIngestDroppingFrames"} <= set(
        rules
    )
    assert rules["OnairUploadsFailing"]["for"] == "1m"
    assert "> 0.8" in rules["OnairSpoolAlmostFull"]["expr"]
    for rule in rules.values():
        assert DURATION.fullmatch(rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]


def test_an_operator_is_paged_for_a_live_starving_30_s_and_sees_its_health() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    starving = rules["OnairLiveStarving"]
    assert starving["for"] == "30s"
    assert 'onair_job_health{state="starving"}' in starving["expr"]
    assert any("onair_job_health" in expr for expr in dashboard_expressions())
