"""The org rows and how they show: the row built from an org record, counts and positions; the short
positions; the state summary; the `orgs` table on a 100-column terminal; the per-org gauges; the org keys
of the admin API's bodies; the status page's org section; status's org lines."""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.admin import views
from bridge.admin.org_metrics import OrgMetrics
from bridge.admin.orgs import OrgRow, org_row, row_json, short_positions, state_summary
from bridge.admin.page import org_section
from bridge.commands.orgs import print_table, table_row
from bridge.commands.status import summary_lines
from bridge.records.ledger import DEFAULT_ORG, OrgRecord

AT = datetime(2026, 12, 4, 3, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Counts:
    """An OrgCounts-shaped tally."""

    pending: int
    failed: int


def record(org_id: str, **changes: Any) -> OrgRecord:
    """An `orgs` row with plausible values."""
    values: dict[str, Any] = {
        "org_id": org_id,
        "name": "Acme",
        "login_url": None,
        "username": None,
        "connection": "connected",
        "salesforce_org_id": None,
        "instance_url": None,
        "state": "active",
        "reason": None,
        "api_used": 10,
        "api_limit": 100,
        "state_since": AT,
        "updated_at": AT,
    }
    return OrgRecord(**{**values, **changes})


def row(org_id: str, **changes: Any) -> OrgRow:
    """An org row."""
    values: dict[str, Any] = {
        "org_id": org_id, "name": "Acme", "state": "active", "reason": None, "pending": 0, "failed": 0,
        "api_used": None, "api_limit": None,
    }  # fmt: skip
    return OrgRow(**{**values, **changes})


def test_an_org_row_takes_its_counts_and_sorted_positions_and_zero_without_counts() -> None:
    """The row holds the org's own counts and positions (sorted by channel); an org without rows counts 0."""
    org = str(uuid.uuid4())
    counts = {org: Counts(pending=4, failed=2)}
    positions = {org: {"/event/B": "9", "/data/A": "3"}, DEFAULT_ORG: {"/data/A": "1"}}
    built = org_row(record(org), counts, positions)
    assert (built.pending, built.failed, list(built.positions.items())) == (
        4,
        2,
        [("/data/A", "3"), ("/event/B", "9")],
    )
    empty = org_row(record(DEFAULT_ORG, name=None), counts, {})
    assert (empty.org_id, empty.pending, empty.failed, dict(empty.positions)) == (DEFAULT_ORG, 0, 0, {})


def test_row_json_holds_every_contract_column_and_whole_positions() -> None:
    """The JSON row has the contract's columns in order and the positions as a mapping."""
    body = row_json(row("o1", positions={"/data/EventChangeEvent": "12"}))
    assert list(body) == [
        "org_id", "name", "state", "reason", "pending", "failed",
        "api_used", "api_limit", "positions", "worker",
    ]  # fmt: skip
    assert body["positions"] == {"/data/EventChangeEvent": "12"} and body["worker"] is None


def test_short_positions_name_each_channel_by_its_last_part() -> None:
    """A table cell shows each channel's last name and its position."""
    assert short_positions({"/data/EventChangeEvent": "12", "/event/Mogli__e": "7"}) == (
        "EventChangeEvent 12, Mogli__e 7"
    )
    assert short_positions({}) == ""


def test_state_summary_counts_each_state_and_gives_the_paused_reasons() -> None:
    """Active, paused and disconnected are always counted; paused orgs are named with their reasons."""
    rows = [
        row("a"),
        row("b", state="paused", reason="integration user inactive"),
        row("c", state="disconnected"),
        row("d", state="paused"),
    ]
    assert state_summary(rows) == (
        "1 active, 2 paused, 1 disconnected (paused: b: integration user inactive; d: no reason recorded)"
    )
    assert state_summary([row("a")]) == "1 active, 0 paused, 0 disconnected"


def test_the_orgs_table_fits_100_columns_with_long_names_and_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a 100-column terminal no line is wider, org UUIDs show 8 characters, the budget is one cell,
    and the footer says how many of how many are shown."""
    monkeypatch.setenv("COLUMNS", "100")
    long_id = str(uuid.uuid4())
    rows = [
        row(DEFAULT_ORG, api_used=5, api_limit=15000),
        row(
            long_id,
            name="A Very Long Clinic Group Name Incorporated",
            state="paused",
            reason="the integration user is inactive in Salesforce; reactivate it " * 2,
            pending=123456,
            failed=789,
            api_used=14999,
            api_limit=15000,
            positions={"/data/EventChangeEvent": "123456789", "/event/Mogli_Event_Change__e": "99"},
        ),
    ]
    out = io.StringIO()
    print_table(out, rows, total=5)
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 100
    assert long_id[:8] in text and long_id not in text
    assert "14999/15000" in text and "123456" in text
    assert "showing 2 of 5 orgs" in text and "--limit N or --all" in text


def test_a_table_row_has_no_budget_cell_without_a_reading() -> None:
    """An org whose API use is not known yet shows an empty budget cell."""
    assert table_row(row("x"), wide=False)["api"] == ""
    assert table_row(row("x", api_used=1, api_limit=2), wide=False)["api"] == "1/2"


def test_org_gauges_are_set_per_org_and_an_org_that_left_is_dropped() -> None:
    """Each org gets its state (1 for its own, 0 for the others), pending, failed and API gauges; a later
    scrape without the org drops its series."""
    metrics = OrgMetrics()
    metrics.update([row("o1", state="paused", pending=3, failed=2, api_used=7, api_limit=70), row("o2")])
    text = metrics.render().decode()
    assert 'mogli_bridge_org_state{org="o1",state="paused"} 1.0' in text
    assert 'mogli_bridge_org_state{org="o1",state="active"} 0.0' in text
    assert 'mogli_bridge_org_pending{org="o1"} 3.0' in text
    assert 'mogli_bridge_org_failed{org="o1"} 2.0' in text
    assert 'mogli_bridge_org_api_used{org="o1"} 7.0' in text
    assert 'mogli_bridge_org_api_limit{org="o1"} 70.0' in text
    assert 'mogli_bridge_org_api_used{org="o2"}' not in text  # no reading, no series
    metrics.update([row("o2")])
    assert 'org="o1"' not in metrics.render().decode()


def test_reconcile_body_takes_orgs_once_each_and_refuses_a_malformed_list() -> None:
    """`orgs` in a reconcile body is kept in order without repeats; a non-list or empty id is refused."""
    assert views.parse_reconcile({"orgs": ["b", "a", "b"]}).orgs == ("b", "a")
    assert views.parse_reconcile({}).orgs == ()
    for bad in ("a", [""], [1]):
        with pytest.raises(views.BadRequest, match="orgs"):
            views.parse_reconcile({"orgs": bad})


def test_retry_body_takes_an_org_and_refuses_a_malformed_one() -> None:
    """`org` in a retry body names the org; a non-string or empty org is refused."""
    assert views.parse_retry({"all_failed": True, "org": "o1"}).org == "o1"
    assert views.parse_retry({"all_failed": True}).org is None
    for bad in (1, " "):
        with pytest.raises(views.BadRequest, match="org"):
            views.parse_retry({"all_failed": True, "org": bad})


def test_org_status_replaces_the_ledger_and_budget_with_the_orgs() -> None:
    """An org's status carries its row, its counts and budget, and its positions; the rest is the daemon's."""
    body = {"ready": True, "salesforce": {"api_used": 1, "api_limit": 2, "api_calls": 5}, "ledger": {}}
    detail = {
        **row_json(row("o1", pending=3, failed=1, api_used=7, api_limit=70, positions={"/c": "4"})),
        "counts": {"activities.failed": 1},
        "recent_failures": [],
    }
    status = views.org_status_json(body, detail)
    assert status["ready"] is True and status["org"]["org_id"] == "o1" and "counts" not in status["org"]
    assert status["salesforce"] == {
        "api_used": 7,
        "api_limit": 70,
        "api_calls": 5,
        "stream_positions": {"/c": "4"},
    }
    assert status["ledger"] == {"pending": 3, "failed": 1, "counts": {"activities.failed": 1}}


def test_the_page_shows_anorg_section_only_with_more_than_the_default_org() -> None:
    """One org: no selector; several: a selector with the chosen org selected and a table of every org."""
    assert org_section([row(DEFAULT_ORG)], None) == ""
    html = org_section([row(DEFAULT_ORG), row("o1", state="paused", reason="limit <reached>")], "o1")
    assert '<select name="org">' in html and '<option value="o1" selected>' in html
    assert "limit &lt;reached&gt;" in html and "Showing org o1" in html


def test_status_lines_name_the_org_or_summarise_the_orgs() -> None:
    """status's summary gains an org line with --org, an orgs line on a ledger of several orgs."""
    base = {"state": "ready", "reasons": [], "pending": 1, "failed": 0, "api_used": None, "api_limit": None}
    one = {"summary": {**base, "org": "o1", "org_state": "paused (limit)"}, "ledger": {}}
    assert ("org", "o1: paused (limit)") in summary_lines(one)
    many = {"summary": {**base, "orgs": "2 active, 0 paused, 0 disconnected"}, "ledger": {}}
    assert ("orgs", "2 active, 0 paused, 0 disconnected") in summary_lines(many)
    assert not any(label in ("org", "orgs") for label, _ in summary_lines({"summary": base, "ledger": {}}))
