"""End to end: damage made by people in the org and in the scheduling database while the daemon is stopped is
found by `reconcile --dry-run --json` (each damage once, with its kind), repaired by `reconcile`, and gone on
the next run. The in-process reconcile pushes the rows it requeued itself (the daemon stays stopped).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from bridge.devtools.localpg import LocalPostgres, free_port
from bridge.devtools.stack import (
    ROOT,
    HttpError,
    check_invariants,
    http_json,
    ledger_activities,
    ledger_connection,
    wait_until,
)
from bridge.devtools.terminal import on_a_terminal

from .conftest import Stack
from .inbound_support import Person, inbound_stack, ledger_rows, org_overrides, wait_journal, wait_streaming

__all__ = ["inbound_stack", "org_overrides"]


@pytest.fixture
def transport() -> str:
    """Reconciliation does not depend on the change-event transport: these tests take CometD's."""
    return "cometd"


API = "/services/data/v60.0/sobjects"


def _person(stack: Stack, method: str, path: str, body: Any = None) -> Any:
    """A plain REST call as a person would make it (no client name in Sforce-Call-Options)."""
    headers = {"Authorization": f"Bearer {stack.emulator.token()}"}
    return http_json(method, f"{stack.emulator.url}{API}/{path}", body, headers=headers)[1]


def _reconcile(stack: Stack, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """`mogli-bridge reconcile --json ...` as a process; the admin API points at a port nobody listens on."""
    result = _reconcile_raw(stack, "--json", *args, env=env)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def _reconcile_raw(
    stack: Stack, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The reconcile command as a process, with `env` added to the environment."""
    config = str(stack.workdir / "daemon.toml")
    return subprocess.run(
        [sys.executable, "-m", "bridge", "--config", config, "reconcile", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=110,
        env={**os.environ, "MOGLI_BRIDGE_ADMIN__LISTEN": f"127.0.0.1:{free_port()}", **(env or {})},
    )


def _settled(stack: Stack, n: int) -> bool:
    try:
        acts = ledger_activities(stack.ledger_url)
    except Exception:
        return False
    return len(acts) >= n and all(a["state"] not in ("pending",) for a in acts.values())


def _key(item: dict[str, Any]) -> tuple[str, str]:
    if item["kind"] == "ledger_user_stale":
        return item["kind"], str(item["detail"]["user_id"])
    if item["kind"] in ("orphan_event", "orphan_mogli_event"):
        return item["kind"], str(item["salesforce_id"])
    if item["kind"] in ("field_mismatch", "mogli_field_mismatch"):
        return item["kind"], f"{item['booking_id'] or item['link_id']}:{item['detail']['field']}"
    return item["kind"], str(item["booking_id"] or item["link_id"])


def test_reconcile_finds_each_damage_once_repairs_all_and_then_finds_none(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """28 kinds of damage in the org and the scheduler: each reported once, all repaired, then zero drift.

    Scoped dry runs (by link, by booking, by a window on the start) report only the drift inside the scope.
    """
    monkeypatch.setenv("MOGLI_BRIDGE_ADMIN__LISTEN", f"127.0.0.1:{free_port()}")
    s, seed = stack.scheduler, stack.seed
    owner, other = s.add_user(seed.users[0]), s.add_user(seed.users[1])
    moved_user, rr_a = s.add_user(seed.users[1]), s.add_user(seed.users[2])
    links = [s.add_link("one_on_one", owner, title=f"Call {i}", description=f"About {i}") for i in range(10)]
    lead_link = s.add_link("one_on_one", owner, title="Lead call")
    moved_link = s.add_link("one_on_one", moved_user, title="Moved owner")
    rr = s.add_link("round_robin", owner, title="Demo")
    start = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    b = [
        s.add_booking(links[i % 8], start + timedelta(hours=i), related=seed.contacts[i % 3])
        for i in range(16)
    ]
    lead_bookings = [s.add_booking(lead_link, start, related=seed.leads[0])]
    lead_bookings += [s.add_booking(link, start, related=seed.contacts[0]) for link in links[8:]]
    moved_booking = s.add_booking(moved_link, start, related=seed.contacts[0])
    rr_booking = s.add_booking(rr, start, related=seed.contacts[1], assigned=rr_a)
    cancelled = s.add_booking(links[0], start, related=seed.contacts[0], status="cancelled")
    daemon = stack.daemon()
    daemon.start()
    wait_until(lambda: _settled(stack, 22), what="the bookings to sync")
    wait_until(lambda: check_invariants(stack.emulator, s, stack.ledger_url) == [], what="a clean start")
    assert daemon.terminate() == 0

    events = {e["Scheduling_Booking_Id__c"]: e for e in stack.emulator.records("Event")}
    moglis = {m["Scheduling_Link_Id__c"]: m for m in stack.emulator.records("Mogli_Event__c")}
    expected: set[tuple[str, str]] = set()

    def patch_event(booking: str, field: str, value: Any) -> None:
        _person(stack, "PATCH", f"Event/{events[booking]['Id']}", {field: value})
        expected.add(("field_mismatch", f"{booking}:{field}"))

    def patch_mogli(link: str, field: str, value: Any, shown: str) -> None:
        _person(stack, "PATCH", f"Mogli_Event__c/{moglis[link]['Id']}", {field: value})
        expected.add(("mogli_field_mismatch", f"{link}:{shown}"))

    # --- Salesforce, as people
    _person(stack, "DELETE", f"Event/{events[b[0]]['Id']}")
    expected.add(("ledger_points_at_deleted", b[0]))
    patch_event(b[1], "OwnerId", seed.users[2])
    patch_event(
        b[2],
        "WhoId",
        seed.contacts[2] if events[b[2]]["WhoId"][:15] != seed.contacts[2][:15] else seed.contacts[0],
    )
    patch_event(b[3], "WhatId", moglis[links[5]]["Id"])
    patch_event(b[4], "Mogli_Event_Id__c", moglis[links[6]]["Id"])
    patch_event(b[5], "Subject", "Changed by hand")
    patch_event(b[6], "Description", "Notes typed in Salesforce")
    patch_event(
        b[7], "StartDateTime", (start + timedelta(hours=7, minutes=-10)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    )
    patch_event(
        b[8], "EndDateTime", (start + timedelta(hours=8, minutes=45)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    )
    orphan = _person(
        stack,
        "POST",
        "Event/",
        {
            "Subject": "Made by hand",
            "OwnerId": seed.users[0],
            "Scheduling_Booking_Id__c": str(uuid.uuid4()),
            "StartDateTime": "2030-01-01T10:00:00.000Z",
            "EndDateTime": "2030-01-01T10:30:00.000Z",
        },
    )["id"]
    expected.add(("orphan_event", orphan))
    orphan_mogli = _person(
        stack,
        "POST",
        "Mogli_Event__c/",
        {
            "Name": "Stray",
            "Scheduling_Link_Id__c": str(uuid.uuid4()),
            "OwnerId": seed.users[0],
        },
    )["id"]
    expected.add(("orphan_mogli_event", orphan_mogli))
    _person(stack, "DELETE", f"Mogli_Event__c/{moglis[lead_link]['Id']}")
    expected.add(("ledger_points_at_deleted", lead_link))
    patch_mogli(links[1], "Name", "Renamed by hand", "Name")
    patch_mogli(links[2], "OwnerId", seed.users[2], "OwnerId")
    patch_mogli(links[3], "Description__c", "Edited", "Description")
    patch_mogli(links[4], "Link_Type__c", "rsvp", "Link_Type")
    revived = _person(
        stack,
        "POST",
        "Event/",
        {
            "Subject": "Restored by hand",
            "OwnerId": seed.users[0],
            "Scheduling_Booking_Id__c": cancelled,
            "StartDateTime": "2030-01-01T10:00:00.000Z",
            "EndDateTime": "2030-01-01T10:30:00.000Z",
        },
    )["id"]
    expected.add(("cancelled_event_exists", cancelled))

    # --- the scheduling database, behind the stopped daemon's back
    s.execute(
        "UPDATE scheduler.bookings SET start_at = start_at + interval '1 hour', end_at = end_at + "
        "interval '1 hour' WHERE id = %s",
        (b[9],),
    )
    s.execute("UPDATE scheduler.bookings SET status = 'cancelled' WHERE id = %s", (b[10],))
    s.execute("DELETE FROM scheduler.bookings WHERE id = %s", (b[11],))
    s.execute("UPDATE scheduler.bookings SET related_record_id = %s WHERE id = %s", (seed.leads[1], b[12]))
    s.execute("UPDATE scheduler.bookings SET assigned_user_id = %s WHERE id = %s", (other, rr_booking))
    for booking in (b[9], b[10], b[11], b[12], rr_booking):
        expected.add(("ledger_booking_stale", booking))
    new_booking = s.add_booking(links[7], start + timedelta(days=1), related=seed.contacts[0])
    expected.add(("ledger_missing_booking", new_booking))
    s.execute("UPDATE scheduler.scheduling_links SET title = 'Renamed call' WHERE id = %s", (links[8],))
    s.execute("UPDATE scheduler.scheduling_links SET description = 'New text' WHERE id = %s", (links[9],))
    expected |= {("ledger_link_stale", links[8]), ("ledger_link_stale", links[9])}
    new_link = s.add_link("rsvp", owner, title="Fresh link")
    expected.add(("ledger_missing_link", new_link))
    s.execute("UPDATE scheduler.users SET salesforce_user_id = %s WHERE id = %s", (seed.users[2], moved_user))
    expected.add(("ledger_user_stale", moved_user))
    new_user = s.add_user(seed.users[0])
    expected.add(("ledger_user_stale", new_user))
    assert len(expected) >= 25

    code, report = _reconcile(stack, "--dry-run")
    assert code == 0, report
    found = Counter(_key(item) for item in report["items"])
    assert set(found) == expected, (set(found) - expected, expected - set(found))
    assert all(n == 1 for n in found.values()), found
    assert report["total"] == len(expected) and not any(i["repaired"] for i in report["items"])
    assert stack.emulator.records("Event") and orphan and revived and lead_bookings and moved_booking

    _check_scopes(stack, links, b, start)
    code, report = _reconcile(stack)
    assert code == 0, report
    assert report["total"] == len(expected) and all(i["repaired"] for i in report["items"]), report
    code, report = _reconcile(stack, "--dry-run")
    assert code == 0 and report["total"] == 0, report["items"]
    # Policy, not drift: the Event a person deleted stays deleted (sync.on_activity_deleted=keep_deleted) and
    # the owner a person chose stays (sync.on_owner_changed=accept); everything else matches the scheduler.
    diffs = check_invariants(stack.emulator, s, stack.ledger_url, failed_ok=frozenset({b[0]}))
    assert [(d.kind, d.key, d.detail.split(":")[0]) for d in diffs] == [("field_mismatch", b[1], "OwnerId")]
    assert ledger_activities(stack.ledger_url)[b[0]]["state"] == "deleted_in_salesforce"


def _check_scopes(stack: Stack, links: list[str], b: list[str], start: datetime) -> None:
    """Dry runs by link, by booking and by window see only their part of the damage."""
    code, report = _reconcile(stack, "--dry-run", "--link", links[1])
    assert code == 0, report
    assert {_key(i) for i in report["items"]} == {
        ("mogli_field_mismatch", f"{links[1]}:Name"),
        ("field_mismatch", f"{b[1]}:OwnerId"),
        ("ledger_booking_stale", b[9]),
    }
    code, report = _reconcile(stack, "--dry-run", "--booking", b[5])
    assert code == 0, report
    assert {_key(i) for i in report["items"]} == {("field_mismatch", f"{b[5]}:Subject")}
    since = (start + timedelta(hours=5, minutes=30)).isoformat()
    until = (start + timedelta(hours=6, minutes=30)).isoformat()
    code, report = _reconcile(stack, "--dry-run", "--since", since, "--until", until)
    assert code == 0, report
    assert {_key(i) for i in report["items"]} == {("field_mismatch", f"{b[6]}:Description")}


def _small_world(stack: Stack) -> list[str]:
    """Nine bookings on three links, synced by the daemon, which is then stopped; returns the booking ids."""
    s, seed = stack.scheduler, stack.seed
    owner = s.add_user(seed.users[0])
    links = [s.add_link("one_on_one", owner, title=f"Call {i}") for i in range(3)]
    start = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    bookings = [
        s.add_booking(links[i % 3], start + timedelta(hours=i), related=seed.contacts[0]) for i in range(9)
    ]
    daemon = stack.daemon()
    daemon.start()
    wait_until(lambda: _settled(stack, 9), what="the bookings to sync")
    wait_until(lambda: check_invariants(stack.emulator, s, stack.ledger_url) == [], what="a clean start")
    assert daemon.terminate() == 0
    return bookings


def test_a_run_out_of_api_budget_pauses_and_the_next_resumes_it(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that reaches the API reserve stops as 'paused'; the next run with the same scope resumes it."""
    monkeypatch.setenv("MOGLI_BRIDGE_ADMIN__LISTEN", f"127.0.0.1:{free_port()}")
    bookings = _small_world(stack)
    events = {e["Scheduling_Booking_Id__c"]: e for e in stack.emulator.records("Event")}
    expected = set()
    for booking in (bookings[0], bookings[4], bookings[8]):
        _person(stack, "PATCH", f"Event/{events[booking]['Id']}", {"Subject": "Edited"})
        expected.add(("field_mismatch", f"{booking}:Subject"))
    small = {"MOGLI_BRIDGE_SYNC__BATCH_SIZE": "2"}
    used_before = stack.emulator.control("limits")["used"]
    code, first = _reconcile(stack, "--dry-run", env=small)
    calls = stack.emulator.control("limits")["used"] - used_before
    assert code == 0 and {_key(i) for i in first["items"]} == expected and calls > 6

    # 10% of 1,000 is the reserve: leave room for about half of a run's calls.
    stack.emulator.control("limits", {"allocation": 1000, "used": 900 - calls // 2})
    code, paused = _reconcile(stack, "--dry-run", env=small)
    assert code == 1 and paused["state"] == "paused" and "API budget" in paused["message"]
    assert paused["run_id"] != first["run_id"] and len(paused["items"]) < len(expected)

    stack.emulator.control("limits", {"used": 0})
    code, resumed = _reconcile(stack, "--dry-run", env=small)
    assert code == 0 and resumed["state"] == "finished" and resumed["run_id"] == paused["run_id"]
    found = Counter(_key(i) for i in resumed["items"])
    assert set(found) == expected and all(n == 1 for n in found.values()), found


def test_reconcile_refuses_when_a_daemon_holds_the_ledger_and_its_admin_api_is_silent(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never two writers: lock held, admin API silent: reconcile refuses and changes nothing."""
    monkeypatch.setenv("MOGLI_BRIDGE_ADMIN__LISTEN", f"127.0.0.1:{free_port()}")
    s, seed = stack.scheduler, stack.seed
    link = s.add_link("one_on_one", s.add_user(seed.users[0]))
    s.add_booking(link, related=seed.contacts[0])
    daemon = stack.daemon()
    daemon.start()
    try:
        wait_until(lambda: _settled(stack, 1), what="the booking to sync")
        result = _reconcile_raw(stack, "--dry-run", "--wait-for-daemon", "3")
        said = " ".join(result.stderr.split())  # the console wraps long lines
        assert result.returncode == 1
        assert "waiting for its admin API" in said
        assert "owns the ledger" in said and "has not answered for 3 s" in said
        with ledger_connection(stack.ledger_url) as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM reconciliation_runs")).scalar() == 0
    finally:
        assert daemon.terminate() == 0


def test_a_run_left_running_by_a_crash_resumes_after_its_last_stored_chunk(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run a crash left 'running' is continued by the next with its scope, after its last stored chunk."""
    monkeypatch.setenv("MOGLI_BRIDGE_ADMIN__LISTEN", f"127.0.0.1:{free_port()}")
    bookings = _small_world(stack)
    events = {e["Scheduling_Booking_Id__c"]: e for e in stack.emulator.records("Event")}
    for booking in bookings:
        _person(stack, "PATCH", f"Event/{events[booking]['Id']}", {"Subject": "Edited"})
    ordered = sorted(bookings)
    # What a process killed after storing the links and the first two booking chunks (of 2) leaves behind.
    progress = {
        "links_done": True,
        "after": ordered[3],
        "counts": {"field_mismatch": 4},
        "bookings_checked": 4,
    }
    scope: dict[str, Any] = {"links": [], "bookings": [], "since": None, "until": None}
    with ledger_connection(stack.ledger_url) as conn:
        conn.execute(
            sa.text(
                "INSERT INTO reconciliation_runs (requested_by, scope, dry_run, state, started_at, summary) "
                "VALUES ('cli', :scope, true, 'running', :now, :summary)"
            ),
            {
                "scope": json.dumps(scope),
                "now": datetime.now(UTC).replace(tzinfo=None),
                "summary": json.dumps(progress),
            },
        )
        conn.commit()
        crashed = conn.execute(sa.text("SELECT max(id) FROM reconciliation_runs")).scalar()
    code, report = _reconcile(stack, "--dry-run", env={"MOGLI_BRIDGE_SYNC__BATCH_SIZE": "2"})
    assert code == 0 and report["run_id"] == crashed and report["state"] == "finished"
    assert sorted(i["booking_id"] for i in report["items"]) == ordered[4:], "only the chunks not yet stored"
    assert report["counts"] == {"field_mismatch": 9}, "the crashed part's counts carry over"


def test_with_a_daemon_running_reconcile_goes_through_its_admin_api(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command asks the running daemon (admin API), which finds, stores and repairs the drift itself."""
    admin = {"MOGLI_BRIDGE_ADMIN__LISTEN": f"127.0.0.1:{free_port()}"}
    monkeypatch.setenv("MOGLI_BRIDGE_ADMIN__LISTEN", admin["MOGLI_BRIDGE_ADMIN__LISTEN"])
    s, seed = stack.scheduler, stack.seed
    link = s.add_link("one_on_one", s.add_user(seed.users[0]), title="Intro call")
    booking = s.add_booking(link, related=seed.contacts[0])
    daemon = stack.daemon()
    daemon.start()
    try:
        wait_until(lambda: _settled(stack, 1), what="the booking to sync")
        [event] = stack.emulator.records("Event")
        _person(stack, "PATCH", f"Event/{event['Id']}", {"Subject": "Edited by hand"})
        code, report = _reconcile(stack, "--dry-run", env=admin)
        assert code == 0 and report["via"] == "daemon", report
        assert [_key(i) for i in report["items"]] == [("field_mismatch", f"{booking}:Subject")]
        code, report = _reconcile(stack, env=admin)
        assert code == 0 and report["via"] == "daemon" and report["repaired"] == 1, report
        wait_until(
            lambda: stack.emulator.records("Event")[0]["Subject"] == "Intro call", what="the daemon's repair"
        )
        code, report = _reconcile(stack, "--dry-run", env=admin)
        assert code == 0 and report["total"] == 0, report
    finally:
        assert daemon.terminate() == 0


def test_other_policies_on_a_postgresql_ledger(
    stack: Stack, pg_cluster: LocalPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """recreate / keep_deleted: a deleted Event is written again, a deleted Mogli Event stays deleted (and its
    cascaded Events are its item, not theirs); the ledger in PostgreSQL works the same.
    """
    monkeypatch.setenv("MOGLI_BRIDGE_ADMIN__LISTEN", f"127.0.0.1:{free_port()}")
    stack.ledger_url = pg_cluster.create_database("ledger_" + stack.slot).replace(
        "postgresql://", "postgresql+psycopg2://"
    )
    bookings = _small_world(stack)
    events = {e["Scheduling_Booking_Id__c"]: e for e in stack.emulator.records("Event")}
    moglis = {m["Id"]: m for m in stack.emulator.records("Mogli_Event__c")}
    _person(stack, "DELETE", f"Event/{events[bookings[0]]['Id']}")
    gone_link_mogli = events[bookings[2]]["WhatId"]
    gone_link = moglis[gone_link_mogli]["Scheduling_Link_Id__c"]
    _person(stack, "DELETE", f"Mogli_Event__c/{gone_link_mogli}")
    policies = {
        "MOGLI_BRIDGE_SYNC__ON_ACTIVITY_DELETED": "recreate",
        "MOGLI_BRIDGE_SYNC__ON_MOGLI_EVENT_DELETED": "keep_deleted",
    }
    code, report = _reconcile(stack, env=policies)
    assert code == 0, report
    assert sorted(
        (i["kind"], i["detail"]["repair"], i["booking_id"] or i["link_id"]) for i in report["items"]
    ) == sorted(
        [
            ("ledger_points_at_deleted", "requeue", bookings[0]),
            ("ledger_points_at_deleted", "mark_deleted", gone_link),
        ]
    )
    code, report = _reconcile(stack, "--dry-run", env=policies)
    assert code == 0 and report["total"] == 0, report["items"]
    assert bookings[0] in {e["Scheduling_Booking_Id__c"] for e in stack.emulator.records("Event")}
    on_gone_link = frozenset(bookings[2::3])
    assert check_invariants(stack.emulator, stack.scheduler, stack.ledger_url, failed_ok=on_gone_link) == []
    with ledger_connection(stack.ledger_url) as conn:
        state = conn.execute(sa.text("SELECT state FROM links WHERE link_id = :k"), {"k": gone_link}).scalar()
    assert state == "deleted_in_salesforce"


def test_reconcile_on_a_ledger_never_set_up_says_to_run_setup(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without `setup` there is nothing to compare against: a configuration error that says what to run."""
    monkeypatch.setenv("MOGLI_BRIDGE_ADMIN__LISTEN", f"127.0.0.1:{free_port()}")
    stack.daemon(setup=False)
    result = _reconcile_raw(stack, "--dry-run")
    assert result.returncode == 2 and "run `mogli-bridge setup` first" in result.stderr


def test_sub_second_booking_times_are_no_drift_run_after_run(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 10: a booking at `now() + interval '3 days'` (microseconds) is written to the second Salesforce
    keeps; reconciliation finds no drift for it, neither on the first run nor on the next."""
    monkeypatch.setenv("MOGLI_BRIDGE_ADMIN__LISTEN", f"127.0.0.1:{free_port()}")
    s, seed = stack.scheduler, stack.seed
    link = s.add_link("one_on_one", s.add_user(seed.users[0]), title="Sub-second call")
    booking = s.add_booking(link, related=seed.contacts[0])
    s.execute(
        "UPDATE scheduler.bookings SET start_at = now() + interval '3 days', "
        "end_at = now() + interval '3 days 30 minutes' WHERE id = %s",
        (booking,),
    )
    [row] = [r for r in s.rows("bookings") if r["id"] == booking]
    assert row["start_at"].microsecond != 0, "the booking carries sub-second digits"
    daemon = stack.daemon()
    daemon.start()
    wait_until(lambda: _settled(stack, 1), what="the booking to sync")
    assert daemon.terminate() == 0
    [event] = stack.emulator.records("Event")
    assert event["StartDateTime"][:19] == row["start_at"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")

    for args in (("--dry-run",), (), ()):
        code, report = _reconcile(stack, *args)
        assert code == 0 and report["total"] == 0, report["items"]


def test_a_dry_run_writes_nothing_to_salesforce_or_the_ledger(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`reconcile --dry-run --json` is a verdict: with damage whose repair would delete (an orphan), mark an
    activity deleted (a person's delete) and rewrite (an edited Subject), it reports all three and sends only
    reads to Salesforce; every record (deleted ones too) and every ledger row stays as it was."""
    monkeypatch.setenv("MOGLI_BRIDGE_ADMIN__LISTEN", f"127.0.0.1:{free_port()}")
    bookings = _small_world(stack)
    events = {e["Scheduling_Booking_Id__c"]: e for e in stack.emulator.records("Event")}
    _person(stack, "PATCH", f"Event/{events[bookings[0]]['Id']}", {"Subject": "Edited"})
    _person(stack, "DELETE", f"Event/{events[bookings[1]]['Id']}")
    orphan = {
        "Subject": "Made by hand",
        "OwnerId": stack.seed.users[0],
        "Scheduling_Booking_Id__c": str(uuid.uuid4()),
        "StartDateTime": "2030-01-01T10:00:00.000Z",
        "EndDateTime": "2030-01-01T10:30:00.000Z",
    }
    _person(stack, "POST", "Event/", orphan)

    def salesforce() -> dict[str, Any]:
        return {o: stack.emulator.records(o, include_deleted=True) for o in ("Event", "Mogli_Event__c")}

    def ledger() -> dict[str, Any]:
        with ledger_connection(stack.ledger_url) as conn:
            return {
                t: [dict(r) for r in conn.execute(sa.text(f"SELECT * FROM {t} ORDER BY 1")).mappings()]
                for t in ("activities", "links", "users", "checkpoints")
            }

    records, rows = salesforce(), ledger()
    routes = stack.emulator.stats()["api_requests"]["by_route"]
    code, report = _reconcile(stack, "--dry-run")
    assert code == 0 and report["dry_run"] is True, report
    assert sorted(i["kind"] for i in report["items"]) == [
        "field_mismatch",
        "ledger_points_at_deleted",
        "orphan_event",
    ]
    assert not any(i["repaired"] for i in report["items"])
    after = stack.emulator.stats()["api_requests"]["by_route"]
    moved = {k for k in after if after[k] != routes.get(k)}
    assert moved and all(k.startswith("GET ") for k in moved), moved
    assert salesforce() == records
    assert ledger() == rows


def test_a_mogli_event_deleted_in_salesforce_is_recreated_by_reconciliation(
    inbound_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 11: a person deletes a Mogli Event, the running daemon marks the link and its Events
    `deleted_in_salesforce`; a reconciliation through the daemon (default policy `recreate`) writes a new
    Mogli Event and the link's future Event again, leaves the past meeting's Event deleted, and then finds
    no drift."""
    stack = inbound_stack
    admin = {"MOGLI_BRIDGE_ADMIN__LISTEN": f"127.0.0.1:{free_port()}"}
    monkeypatch.setenv("MOGLI_BRIDGE_ADMIN__LISTEN", admin["MOGLI_BRIDGE_ADMIN__LISTEN"])
    s, seed = stack.scheduler, stack.seed
    link = s.add_link("one_on_one", s.add_user(seed.users[0]), title="Weekly call")
    now = datetime.now(UTC).replace(microsecond=0)
    future = s.add_booking(link, start=now + timedelta(days=3), related=seed.contacts[0])
    past = s.add_booking(link, start=now - timedelta(days=1), related=seed.contacts[0])
    daemon = stack.daemon()
    daemon.start()
    try:
        wait_until(lambda: _settled(stack, 2), what="both bookings to sync")
        wait_streaming(stack.emulator)
        [gone] = [
            m["Id"] for m in stack.emulator.records("Mogli_Event__c") if m["Scheduling_Link_Id__c"] == link
        ]
        Person(stack.emulator, seed.users[2]).delete("Mogli_Event__c", gone)
        wait_journal(stack.ledger_url, "salesforce.mogli_event_deleted")
        wait_until(
            lambda: (
                {ledger_activities(stack.ledger_url)[b]["state"] for b in (future, past)}
                == {"deleted_in_salesforce"}
            ),
            what="the cascade marked",
        )
        [row] = [r for r in ledger_rows(stack.ledger_url, "links") if r["link_id"] == link]
        assert row["state"] == "deleted_in_salesforce"

        code, report = _reconcile(stack, env=admin)
        assert code == 0 and report["via"] == "daemon", report
        assert [(i["kind"], i["link_id"], i["repaired"]) for i in report["items"]] == [
            ("ledger_points_at_deleted", link, True)
        ]

        def recreated() -> dict[str, Any] | None:
            live = [m for m in stack.emulator.records("Mogli_Event__c") if m["Scheduling_Link_Id__c"] == link]
            events = {e["Scheduling_Booking_Id__c"]: e for e in stack.emulator.records("Event")}
            if len(live) == 1 and future in events and events[future]["WhatId"] == live[0]["Id"]:
                return events
            return None

        events = wait_until(recreated, timeout=60, what="the Mogli Event and the future Event written again")
        assert (
            past not in events
            and ledger_activities(stack.ledger_url)[past]["state"] == "deleted_in_salesforce"
        )
        code, report = _reconcile(stack, "--dry-run", env=admin)
        assert code == 0 and report["total"] == 0, report["items"]
    finally:
        assert daemon.terminate() == 0


def test_reconcile_by_change_time_sees_only_what_changed_in_the_window(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`reconcile --changed-since` covers the Events people changed since then, whenever they take place: an
    Event edited before the window is left out (a full run still finds it); one edited in it is found."""
    monkeypatch.setenv("MOGLI_BRIDGE_ADMIN__LISTEN", f"127.0.0.1:{free_port()}")
    bookings = _small_world(stack)
    events = {e["Scheduling_Booking_Id__c"]: e for e in stack.emulator.records("Event")}
    _person(stack, "PATCH", f"Event/{events[bookings[0]]['Id']}", {"Subject": "Edited before"})
    since = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    wait_until(lambda: datetime.now(UTC) > since, what="the window to open")
    _person(stack, "PATCH", f"Event/{events[bookings[5]]['Id']}", {"Subject": "Edited in the window"})

    code, report = _reconcile(stack, "--dry-run", "--changed-since", since.isoformat())
    assert code == 0, report
    assert [_key(i) for i in report["items"]] == [("field_mismatch", f"{bookings[5]}:Subject")]
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    code, report = _reconcile(
        stack, "--dry-run", "--changed-since", since.isoformat(), "--changed-until", later
    )
    assert code == 0 and report["total"] == 1, report
    code, report = _reconcile(stack, "--dry-run")
    assert code == 0 and {_key(i) for i in report["items"]} == {
        ("field_mismatch", f"{bookings[0]}:Subject"),
        ("field_mismatch", f"{bookings[5]}:Subject"),
    }
    result = _reconcile_raw(
        stack, "--dry-run", "--changed-since", since.isoformat(), "--link", str(uuid.uuid4())
    )
    assert result.returncode == 2 and "cannot be combined" in result.stderr


def _on_a_terminal(stack: Stack, *args: str, env: dict[str, str]) -> tuple[int, list[str]]:
    """`reconcile` with stdout and stderr on a 100-column pseudo-terminal: (exit code, the lines shown, ANSI
    codes removed)."""
    config = str(stack.workdir / "daemon.toml")
    code, text = on_a_terminal(["--config", config, "reconcile", *args], columns=100, env=env)
    return code, [part for line in text.split("\n") for part in line.split("\r")]


def _answers(listen: str) -> bool:
    """Whether the daemon's admin API answers /healthz."""
    try:
        return http_json("GET", f"http://{listen}/healthz")[0] == 200
    except (OSError, HttpError):
        return False


def _damage(stack: Stack, bookings: list[str]) -> list[str]:
    """Three Events edited by hand in the org; returns their booking ids."""
    events = {e["Scheduling_Booking_Id__c"]: e for e in stack.emulator.records("Event")}
    damaged = [bookings[0], bookings[4], bookings[8]]
    for booking in damaged:
        _person(stack, "PATCH", f"Event/{events[booking]['Id']}", {"Subject": "Edited by hand"})
    return damaged


def test_through_the_daemon_a_terminal_shows_progress_and_one_line_per_item(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`reconcile` through a running daemon, on a terminal, shows a progress bar fed by the daemon's run
    (bookings checked) and then one line per drift item with short ids, no line over 100 columns."""
    admin = {"MOGLI_BRIDGE_ADMIN__LISTEN": f"127.0.0.1:{free_port()}"}
    monkeypatch.setenv("MOGLI_BRIDGE_ADMIN__LISTEN", admin["MOGLI_BRIDGE_ADMIN__LISTEN"])
    damaged = _damage(stack, _small_world(stack))
    daemon = stack.daemon()
    daemon.start()
    try:
        wait_until(lambda: _answers(admin["MOGLI_BRIDGE_ADMIN__LISTEN"]), what="the daemon's admin API")
        code, lines = _on_a_terminal(stack, "--dry-run", env=admin)
    finally:
        assert daemon.terminate() == 0
    assert code == 0, "\n".join(lines)
    assert any("started by the running daemon" in line for line in lines), "\n".join(lines)
    assert any(re.search(r"bookings checked.*\d+/\?", line) for line in lines), "\n".join(lines)
    assert max(len(line) for line in lines) <= 100
    for booking in damaged:
        [line] = [x for x in lines if booking[:8] in x]
        assert "field_mismatch" in line and booking not in line


def test_in_process_log_lines_never_tear_the_progress_bar(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process on a terminal with JSON logs, no log line is written while the bar is drawn: each is a
    whole JSON object on its own line, after the bar's last frame."""
    monkeypatch.setenv("MOGLI_BRIDGE_ADMIN__LISTEN", f"127.0.0.1:{free_port()}")
    damaged = _damage(stack, _small_world(stack))
    code, lines = _on_a_terminal(stack, "--dry-run", env={"MOGLI_BRIDGE_LOG__LEVEL": "debug"})
    assert code == 0, "\n".join(lines)
    bar = [i for i, line in enumerate(lines) if re.search(r"^(links|bookings)\s.*\d+/\d+", line)]
    logs = [i for i, line in enumerate(lines) if '"level": ' in line or '"timestamp": ' in line]
    assert bar and logs, "\n".join(lines)
    assert not [i for i in logs if bar[0] <= i <= bar[-1]], "\n".join(lines)
    assert all(json.loads(lines[i])["event"] for i in logs)  # whole lines: each parses alone
    assert all(any(b[:8] in line for line in lines) for b in damaged)
