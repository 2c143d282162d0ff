"""config/prometheus/ and config/grafana/ use only what the daemon exports, each file as its tool accepts it.

Metric names, label names and label values are held to a real `BridgeMetrics` registry (and component
names to the supervisor's wiring in bridge/). The rules' structure and every expression are read by the
PromQL reader in monitoring_promql.py, always; where `promtool` is on PATH it also checks the rules, the
example configuration and the dashboard's queries, and runs alerts.test.yml (each alert fires on the series
meant to raise it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.metrics import BridgeMetrics, CheckResult, Readings, ReplicationReading
from tests.unit.monitoring_promql import PromQLError, Reading, read, substitute_grafana

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "config" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "config" / "prometheus" / "alerts.test.yml"
EXAMPLE = ROOT / "config" / "prometheus" / "prometheus.example.yml"
DASHBOARD = ROOT / "config" / "grafana" / "mogli-bridge.json"
PROMTOOL = shutil.which("promtool")
NO_PROMTOOL = (
    "promtool is not on PATH; the structural checks in this module (which always run) stand in for it"
)
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
}
SCRAPE_LABELS = frozenset({"job", "instance"})  # added by Prometheus to every scraped series
SEVERITIES = frozenset({"critical", "warning", "info"})
WHERE_TO_LOOK = re.compile(r"`mogli-bridge [a-z]+|status page|README")
PROMETHEUS_DURATION = re.compile(r"^(\d+[smhdwy])+$")
COMPONENT_KEY = re.compile(
    r"""components\[["'](\w+)["']\]\s*=|["'](\w+)["']:\s*(?:StartsUp\()?[\w.]+\.run\b"""
)


def readings(components: dict[str, str], checks: tuple[CheckResult, ...]) -> Readings:
    """A snapshot with the given components and pings, and nothing else of note."""
    replication = ReplicationReading(
        slot="bridge", connected=True, slot_exists=True, slot_active=True, wal_status="reserved",
        lag_bytes=0, retained_bytes=0, lag_seconds=0.0, applied_lsn=None, acked_lsn=0, last_commit_time=None,
        queue_depth=0, reconnects=0,
    )  # fmt: skip
    return Readings(
        at=datetime(2026, 1, 1, tzinfo=UTC), components=components, checks=checks, replication=replication,
        api_used=1, api_limit=2, api_calls=0, pushed=0, failed=0, waiting_reason=None, ledger_counts={},
        drift_found=0, drift_repaired=0,
    )  # fmt: skip


def exported(snapshot: Readings, channels: tuple[str, ...] = ()) -> dict[str, dict[str, set[str]]]:
    """Each series name the registry exposes after one update (and the change stream's reports of
    `channels`), mapped to its labels and their values."""
    metrics = BridgeMetrics()
    metrics.update(snapshot)
    for channel in channels:
        metrics.observe_subscription(channel, True)
    series: dict[str, dict[str, set[str]]] = {}
    for family in metrics.registry.collect():
        labels: dict[str, set[str]] = defaultdict(set)
        for sample in family.samples:
            for name, value in sample.labels.items():
                labels[name].add(value)
        for suffix in SUFFIXES[family.type]:
            series[family.name + suffix] = labels
    return series


# Label names need a series to show them, so one registry is fed a component, a ping and a subscribed
# channel; label values come from a registry fed nothing of its own, so that only values the daemon itself
# creates count.
LABEL_NAMES = exported(
    readings({"a_component": "running"}, (CheckResult("a_dependency", True),)), channels=("a_channel",)
)
LABEL_VALUES = exported(readings({}, ()))


def supervised_components() -> set[str]:
    """Names the daemon's wiring gives its supervised components (`components["x"] = ...` or `"x": y.run`)."""
    names: set[str] = set()
    for path in (ROOT / "bridge").rglob("*.py"):
        for match in COMPONENT_KEY.finditer(path.read_text()):
            names.add(match.group(1) or match.group(2))
    return names


def problems(expr: str) -> list[str]:
    """What in one expression the daemon does not export: metric names, label names, label values."""
    try:
        reading = read(expr)
    except PromQLError as exc:
        return [f"not PromQL: {exc}"]
    found: list[str] = []
    used_labels: set[str] = set(SCRAPE_LABELS)
    for selector in reading.selectors:
        if selector.metric == "up":
            used_labels |= SCRAPE_LABELS
            continue
        if selector.metric not in LABEL_NAMES:
            found.append(f"unknown metric {selector.metric}")
            continue
        labels = set(LABEL_NAMES[selector.metric]) | SCRAPE_LABELS
        used_labels |= labels
        for label, op, value in selector.matchers:
            if label not in labels:
                found.append(f"{selector.metric} has no label {label}")
            elif op in ("=", "!=") and label == "component" and value not in supervised_components():
                found.append(f"no supervised component is named {value!r}")
            elif op in ("=", "!=") and value not in LABEL_VALUES[selector.metric].get(label, {value}):
                found.append(f"{selector.metric} never has {label}={value!r}")
    found.extend(
        f"grouping on {label}, which no series here has" for label in reading.grouping_labels - used_labels
    )
    return found


def load_rules() -> list[dict[str, Any]]:
    """Every rule of alerts.yml, in order."""
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, expression with Grafana's range variables replaced) for every target of every panel."""
    board = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], substitute_grafana(target["expr"]))
        for panel in board["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """promtool with these arguments, its output captured."""
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False)


# --- the checker itself -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "complaint"),
    [
        ("mogli_bridge_no_such_metric > 0", "unknown metric mogli_bridge_no_such_metric"),
        ("rate(mogli_bridge_changes[5m])", "unknown metric mogli_bridge_changes"),
        (
            "mogli_bridge_replication_lag_bytes_total",
            "unknown metric mogli_bridge_replication_lag_bytes_total",
        ),
        ('mogli_bridge_ledger_records{org="x"}', "mogli_bridge_ledger_records has no label org"),
        ('mogli_bridge_changes_total{outcome="done"}', "mogli_bridge_changes_total never has outcome='done'"),
        ('mogli_bridge_ledger_records{entity="link"}', "mogli_bridge_ledger_records never has entity='link'"),
        ('mogli_bridge_component_up{component="stream"}', "no supervised component is named 'stream'"),
        ("sum by (org) (mogli_bridge_ledger_records)", "grouping on org, which no series here has"),
        ("sum(rate(mogli_bridge_changes_total[5m])", "not PromQL: unclosed '('"),
        ("rates(mogli_bridge_changes_total[5m])", "not PromQL: unknown function 'rates'"),
        ("rate(mogli_bridge_changes_total[5 minutes])", "not PromQL: bad range '[5 minutes]'"),
        ("mogli_bridge_source_queue_depth > $threshold", "not PromQL: unexpected '$threshold' at 34"),
    ],
)
def test_the_checker_names_what_the_daemon_does_not_export(expr: str, complaint: str) -> None:
    """Each kind of mistake (name, suffix, label, value, grouping, syntax) is caught and named."""
    assert complaint in problems(expr)


def test_the_checker_accepts_what_the_daemon_exports() -> None:
    """Counters with _total, labelled gauges, grouping, scrape labels and `up` pass."""
    expr = (
        'sum by (entity, instance) (rate(mogli_bridge_changes_total{job="j",outcome="synced"}[5m])) '
        '> 0 and on (instance) max by (instance) (up{job="j"}) == 1 '
        'or mogli_bridge_ledger_records{entity="links",state="pending"} offset 5m'
    )
    assert problems(expr) == []


# --- Prometheus alerting rules ------------------------------------------------------------------------------


def test_the_rules_file_has_groups_of_complete_alerts() -> None:
    """Each rule: alert, expression, `for:`, severity, summary, and a description saying where to look."""
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"} and document["groups"]
    group_names = [group["name"] for group in document["groups"]]
    assert len(group_names) == len(set(group_names))
    alerts = [rule["alert"] for rule in load_rules()]
    assert len(alerts) == len(set(alerts)), "alert names repeat"
    for group in document["groups"]:
        assert group["rules"], f"group {group['name']} is empty"
        for rule in group["rules"]:
            assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule.get("alert")
            assert PROMETHEUS_DURATION.match(rule["for"]), rule["alert"]
            assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
            assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]
            assert rule["annotations"]["summary"].strip(), rule["alert"]
            assert WHERE_TO_LOOK.search(rule["annotations"]["description"]), (
                f"{rule['alert']}: where to look?"
            )


@pytest.mark.parametrize("rule", load_rules(), ids=lambda rule: rule["alert"])
def test_each_alert_uses_only_exported_metrics(rule: dict[str, Any]) -> None:
    """An alert expression reads as PromQL and names only metrics, labels and values the daemon exports."""
    assert problems(rule["expr"]) == []


@pytest.mark.parametrize(
    ("concern", "metric", "label_value"),
    [
        ("replication lag growing", "mogli_bridge_replication_lag_bytes", None),
        ("pending work growing", "mogli_bridge_ledger_records", ("state", "pending")),
        ("failed records appearing", "mogli_bridge_changes_total", ("outcome", "failed")),
        ("change stream not running", "mogli_bridge_component_up", ("component", "inbound")),
        ("change stream unsubscribed", "mogli_bridge_stream_subscribed", None),
        ("API budget nearly gone", "mogli_bridge_salesforce_api_remaining", None),
        ("delivered events nearly gone", "mogli_bridge_salesforce_delivered_events_remaining", None),
        ("daemon down", "up", ("job", "mogli-bridge")),
        ("metrics absent", "mogli_bridge_replication_connected", ("job", "mogli-bridge")),
    ],
)
def test_each_operator_concern_has_an_alert(
    concern: str, metric: str, label_value: tuple[str, str] | None
) -> None:
    """The alerts operators expect exist: each concern has a rule watching its metric (and label value)."""
    watching = [
        rule["alert"]
        for rule in load_rules()
        for selector in read(rule["expr"]).selectors
        if selector.metric == metric
        and (label_value is None or (label_value[0], "=", label_value[1]) in selector.matchers)
    ]
    assert watching, f"no alert for {concern}"


def test_an_alert_fires_when_the_metrics_are_absent_altogether() -> None:
    """A scrape job that finds nothing raises no `up == 0`: a rule watches for the metrics being absent."""
    absent = [rule["alert"] for rule in load_rules() if "absent" in read(rule["expr"]).functions]
    assert absent


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    """alerts.test.yml expects each alert of alerts.yml to fire at least once, and names no other alert."""
    tests = yaml.safe_load(RULE_TESTS.read_text())
    assert tests["rule_files"] == ["alerts.yml"]
    cases = [case for test in tests["tests"] for case in test["alert_rule_test"]]
    fired = {case["alertname"] for case in cases if case["exp_alerts"]}
    alerts = {rule["alert"] for rule in load_rules()}
    assert fired == alerts
    assert {case["alertname"] for case in cases} <= alerts


def test_the_example_configuration_scrapes_the_job_the_rules_watch() -> None:
    """prometheus.example.yml loads alerts.yml and scrapes /metrics under the job name the rules match."""
    config = yaml.safe_load(EXAMPLE.read_text())
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["mogli-bridge"]["metrics_path"] == "/metrics"
    matched = {
        value
        for rule in load_rules()
        for selector in read(rule["expr"]).selectors
        for label, _, value in selector.matchers
        if label == "job"
    }
    assert matched == {"mogli-bridge"}


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_promtool_accepts_the_rules_and_the_example_configuration() -> None:
    """`promtool check rules` and `promtool check config` pass."""
    for args in (("check", "rules", str(RULES)), ("check", "config", str(EXAMPLE))):
        result = run_promtool(*args)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_promtool_unit_tests_fire_each_alert(tmp_path: Path) -> None:
    """`promtool test rules alerts.test.yml` passes (run on a copy of the rules without annotations)."""
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            del rule["annotations"]  # promtool would compare the rendered texts too
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(document))
    shutil.copy(RULE_TESTS, tmp_path / "alerts.test.yml")
    result = run_promtool("test", "rules", str(tmp_path / "alerts.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


# --- Grafana dashboard --------------------------------------------------------------------------------------


def test_the_dashboard_is_importable_with_a_prometheus_datasource_variable() -> None:
    """The JSON has a uid, a title and a datasource variable every panel and query use; panels fit the grid"""
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    source = {"type": "prometheus", "uid": "${datasource}"}
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == source, panel["title"]
            assert all(target["datasource"] == source for target in panel["targets"]), panel["title"]
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == source
            assert problems(_label_values_selector(variable["query"]["query"])) == []


def _label_values_selector(query: str) -> str:
    """The series selector inside Grafana's `label_values(selector, label)`."""
    match = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
    assert match, query
    return match.group(1)


def test_every_panel_has_a_target_with_an_expression() -> None:
    """No panel (other than a row) is empty: each has at least one query with a non-blank expression."""
    board = json.loads(DASHBOARD.read_text())
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert all(target["expr"].strip() and target["refId"] for target in panel["targets"]), panel[
                "title"
            ]


@pytest.mark.parametrize(
    ("title", "expr"),
    [pytest.param(*target, id=f"{n}:{target[0]}") for n, target in enumerate(dashboard_targets())],
)
def test_each_dashboard_query_uses_only_exported_metrics(title: str, expr: str) -> None:
    """A panel's query reads as PromQL and names only metrics, labels and values the daemon exports."""
    assert problems(expr) == [], title


@pytest.mark.parametrize(
    ("topic", "metric"),
    [
        ("bookings written per minute", "mogli_bridge_changes_total"),
        ("pending and failed", "mogli_bridge_ledger_records"),
        ("replication lag (bytes)", "mogli_bridge_replication_lag_bytes"),
        ("replication lag (seconds)", "mogli_bridge_replication_lag_seconds"),
        ("API budget used", "mogli_bridge_salesforce_api_used"),
        ("API budget limit", "mogli_bridge_salesforce_api_limit"),
        ("delivered-event allocation", "mogli_bridge_salesforce_delivered_events_remaining"),
        ("stream state", "mogli_bridge_component_up"),
        ("channels subscribed", "mogli_bridge_stream_subscribed"),
        ("drift found", "mogli_bridge_reconciliation_drift_found"),
        ("drift repaired", "mogli_bridge_reconciliation_drift_repaired"),
    ],
)
def test_the_dashboard_charts_each_topic(topic: str, metric: str) -> None:
    """Each thing operators asked to see has a panel that queries its metric."""
    charted = {selector.metric for _, expr in dashboard_targets() for selector in read(expr).selectors}
    assert metric in charted, topic


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each panel query, as Prometheus receives it, passes `promtool check rules` as a recording rule."""
    rules = [
        {"record": f"dashboard:query_{n}", "expr": expr} for n, (_, expr) in enumerate(dashboard_targets())
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_reading_is_what_the_checker_reads() -> None:
    """read() lists selectors, grouping labels and functions: the three things the checks above rely on."""
    reading = read('max by (component) (mogli_bridge_component_up{component!="inbound"}) == 0')
    assert isinstance(reading, Reading)
    assert [(s.metric, s.matchers) for s in reading.selectors] == [
        ("mogli_bridge_component_up", (("component", "!=", "inbound"),))
    ]
    assert reading.grouping_labels == {"component"}
    assert reading.functions == {"max"}
