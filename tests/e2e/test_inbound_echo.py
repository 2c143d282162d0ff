"""End to end: the bridge's own writes coming back as change events cause no work, and a lost replay window
is reconciled."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import pytest

from bridge.devtools.stack import ledger_activities, wait_until

from .conftest import Stack, assert_logs_clean
from .inbound_support import (
    Person,
    inbound_journal,
    inbound_stack,
    ledger_rows,
    org_overrides,
    record,
    transport,
    wait_journal,
    wait_streaming,
)

__all__ = ["inbound_stack", "org_overrides", "transport"]

BOOKINGS = 1000
LINKS = 5
CUSTOM_CHANNEL = "/data/MogliBridge__chn"  # `setup` creates it, the daemon subscribes to it (channel = auto)


def _insert_bookings(stack: Stack, link_ids: list[str], contact: str) -> list[str]:
    """BOOKINGS bookings spread over the links, in one transaction."""
    import uuid

    start = (datetime.now(UTC) + timedelta(days=5)).replace(microsecond=0)
    rows = []
    for n in range(BOOKINGS):
        at = start + timedelta(minutes=30 * n)
        rows.append(
            (
                str(uuid.uuid4()),
                link_ids[n % len(link_ids)],
                at,
                at + timedelta(minutes=30),
                "Invitee Person",
                contact,
            )
        )
    conn = psycopg2.connect(stack.dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO scheduler.bookings (id, link_id, start_at, end_at, status, invitee_name, "
                "related_record_id) VALUES (%s, %s, %s, %s, 'scheduled', %s, %s)",
                rows,
            )
    finally:
        conn.close()
    return [r[0] for r in rows]


def _all_synced(stack: Stack, n: int) -> bool:
    try:
        acts = ledger_activities(stack.ledger_url)
    except Exception:
        return False
    return len(acts) >= n and all(a["state"] == "synced" for a in acts.values())


def _writes(stats: dict[str, Any]) -> dict[str, int]:
    """Request counts of every route that is not a read."""
    by_route: dict[str, int] = stats["api_requests"]["by_route"]
    return {route: count for route, count in by_route.items() if not route.startswith("GET")}


@pytest.mark.parametrize("channel", ["custom", "standard"])
def test_echoes_of_a_thousand_bookings_cause_no_writes(
    inbound_stack: Stack, channel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 Events written by the bridge cause no writes anywhere (emulator request counts, scheduler rows
    and the ledger's journal and versions unchanged): on the filtered custom channel `setup` creates, they are
    never delivered; on the standard channels, every one is recognised as the bridge's own by commitUser."""
    monkeypatch.setenv("MOGLI_BRIDGE_SYNC__CHANNEL", channel)
    stack = inbound_stack
    s, seed = stack.scheduler, stack.seed
    owner = s.add_user(seed.users[0])
    links = [s.add_link("one_on_one", owner, title=f"Link {n}") for n in range(LINKS)]
    booking_ids = _insert_bookings(stack, links, seed.contacts[0])
    daemon = stack.daemon()
    daemon.start()
    daemon.wait_started()
    wait_until(lambda: _all_synced(stack, BOOKINGS), timeout=120, what="every booking written")
    wait_streaming(stack.emulator)
    after_sync = stack.emulator.stats()
    bookings_before = {b["id"]: b["updated_at"] for b in s.rows("bookings")}
    # Every write (1,000 Events, 5 Mogli Events) comes back as change events: the org merges the same change
    # to several records of one transaction into one event, and Collections writes carry no `client=` in
    # changeOrigin (the emulator's pessimistic defaults), so only commitUser tells the bridge's own changes.
    # A person's change after them is delivered after them (in replay order): a marker of "all seen".
    marker = ledger_activities(stack.ledger_url)[booking_ids[-1]]["activity_id"]
    Person(stack.emulator, seed.users[1]).delete("Event", marker)
    wait_journal(stack.ledger_url, "salesforce.event_deleted")
    assert daemon.terminate() == 0
    assert_logs_clean(daemon)

    after = stack.emulator.stats()
    grew = {
        r: c - _writes(after_sync).get(r, 0)
        for r, c in _writes(after).items()
        if c != _writes(after_sync).get(r)
    }
    assert list(grew.values()) == [1], f"only the person's delete may be a new write: {grew}"
    assert {b["id"]: b["updated_at"] for b in s.rows("bookings")} == bookings_before
    assert [e["action"] for e in inbound_journal(stack.ledger_url)] == ["salesforce.event_deleted"]
    acts = ledger_activities(stack.ledger_url)
    assert all(
        a["version"] == a["synced_version"] for a in acts.values() if a["booking_id"] != booking_ids[-1]
    )
    stopped = [line for line in daemon.log_lines() if line.get("event") == "inbound.stopped"]
    assert stopped and stopped[-1]["applied"] == 1
    if channel == "custom":
        logs = daemon.log_lines()
        assert [line["channel"] for line in logs if line.get("event") == "streaming.custom_channel"] == [
            CUSTOM_CHANNEL
        ]
        assert after["delivered_events"] == 1  # the person's delete alone passed the filters
        assert stopped[-1]["ignored"] == {}
    else:
        # Every other delivered event was recognised as the bridge's own (none merely "unchanged" by value).
        assert after["delivered_events"] > 1
        assert stopped[-1]["ignored"] == {"echo": after["delivered_events"] - 1}


def _event_position(stack: Stack) -> str | None:
    try:
        rows = ledger_rows(stack.ledger_url, "checkpoints")
    except Exception:
        return None
    return next((r["position"] for r in rows if r["stream"] == CUSTOM_CHANNEL), None)


def test_replay_id_outside_retention_is_reconciled(inbound_stack: Stack) -> None:
    """A restart whose stored replay id was purged logs a warning, resubscribes and reconciles the window:
    a change made while the daemon was down (and whose event was purged) is still noticed and repaired."""
    stack = inbound_stack
    s, seed = stack.scheduler, stack.seed
    owner = s.add_user(seed.users[0])
    link = s.add_link("one_on_one", owner)
    start = (datetime.now(UTC) + timedelta(days=4)).replace(microsecond=0)
    booking = s.add_booking(link, start=start, related=seed.contacts[0])
    first = stack.daemon("first")
    first.start()
    first.wait_started()
    wait_until(lambda: _all_synced(stack, 1), timeout=60, what="the booking written")
    wait_streaming(stack.emulator)
    event_id = ledger_activities(stack.ledger_url)[booking]["activity_id"]
    # The bridge's own writes never reach it through the filtered channel: a person's edit sets a position.
    Person(stack.emulator, seed.users[1]).update("Event", event_id, {"Subject": "Renamed by a person"})
    wait_until(lambda: _event_position(stack), timeout=60, what="the channel position stored")
    assert first.terminate() == 0

    moved = start + timedelta(hours=3)
    Person(stack.emulator, seed.users[1]).update(
        "Event",
        event_id,
        {"StartDateTime": moved.isoformat(), "EndDateTime": (moved + timedelta(minutes=30)).isoformat()},
    )
    stack.emulator.control("streaming/purge", {"older_than_seconds": 0})

    second = stack.daemon("second")
    second.start()
    second.wait_started()
    wait_journal(stack.ledger_url, "streaming.replay_window_lost")

    def restored() -> bool:
        event = record(stack.emulator, "Event", event_id)
        return event is not None and event["StartDateTime"].startswith(start.strftime("%Y-%m-%dT%H:%M"))

    wait_until(restored, timeout=90, what="the moved Event restored by the reconciliation")
    assert second.terminate() == 0
    assert_logs_clean(second)
    warnings = [line for line in second.log_lines() if line.get("event") == "streaming.replay_window_lost"]
    assert warnings and warnings[0]["level"] == "warning"
    runs = ledger_rows(stack.ledger_url, "reconciliation_runs")
    assert [r["requested_by"] for r in runs] == ["streaming"] * len(runs) and runs
    scope = runs[0]["scope"]
    assert (json.loads(scope) if isinstance(scope, str) else scope)["changed_since"] is not None
    assert "reconcile_requested" in [e["action"] for e in inbound_journal(stack.ledger_url)]
