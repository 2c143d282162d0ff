"""The chaos suite: break everything that can break, then prove scheduler, ledger and Salesforce agree.

`make test` runs the short version (5 kill cycles, 600 operations); `make chaos` the long one
(`MOGLI_CHAOS=long`: 20 cycles, 3,000 operations). Each run ends with the invariant checker reporting zero
differences; the figures go to `$MOGLI_CHAOS_REPORT` (JSON lines) when it is set.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from bridge.localpg import LocalPostgres
from bridge.stack import (
    ROOT,
    DaemonProcess,
    EmulatorProcess,
    HttpError,
    check_invariants,
    ledger_activities,
    wait_until,
)
from tests.e2e.conftest import Stack, assert_logs_clean
from tests.e2e.inbound_support import Person

from .conftest import KILL_CYCLES, OPERATIONS
from .traffic import Traffic, make_links


def _report(name: str, **figures: Any) -> None:
    path = os.environ.get("MOGLI_CHAOS_REPORT")
    if path:
        with Path(path).open("a") as fh:
            fh.write(json.dumps({"scenario": name, **figures}) + "\n")


def _converged(stack: Stack, traffic: Traffic, timeout: float = 240) -> None:
    """Wait until nothing is pending and the three sides agree; fail with the differences otherwise."""

    def agree() -> bool:
        acts = ledger_activities(stack.ledger_url)
        if len(acts) < len(traffic.bookings) or any(a["state"] == "pending" for a in acts.values()):
            return False
        return check_invariants(stack.emulator, stack.scheduler, stack.ledger_url) == []

    try:
        wait_until(agree, timeout=timeout, interval=1.0, what="the scheduler, ledger and org to agree")
    except AssertionError:
        diffs = check_invariants(stack.emulator, stack.scheduler, stack.ledger_url)
        raise AssertionError(f"{len(diffs)} differences, first: {diffs[:5]}") from None


class Saboteur(threading.Thread):
    """Keeps breaking Salesforce while it runs: sessions, streaming clients, the daily allocation."""

    def __init__(self, emulator: EmulatorProcess, seed: int) -> None:
        super().__init__(daemon=True)
        self.emulator, self.rng = emulator, random.Random(seed)
        self.stop = threading.Event()
        self.count: dict[str, int] = {
            "sessions_expired": 0,
            "clients_forgotten": 0,
            "allocation_exhausted": 0,
        }

    def run(self) -> None:
        """Every half second, one act of sabotage."""
        while not self.stop.wait(0.5):
            roll = self.rng.random()
            if roll < 0.5:
                self.emulator.control("sessions/expire")
                self.count["sessions_expired"] += 1
            elif roll < 0.8:
                self.emulator.control("streaming/forget-clients")
                self.count["clients_forgotten"] += 1
            elif roll < 0.9:
                limits = self.emulator.control("limits", {})
                self.emulator.control("limits", {"used": limits["allocation"]})
                time.sleep(1.0)
                self.emulator.control("limits", {"used": 0})
                self.count["allocation_exhausted"] += 1


FAULTS = [
    {"path": "/composite/sobjects", "status": 503, "error_code": "SERVER_UNAVAILABLE", "probability": 0.10},
    {"path": "/composite/sobjects", "status": 400, "error_code": "UNABLE_TO_LOCK_ROW", "probability": 0.03},
    {"path": "/composite/sobjects", "action": "drop", "probability": 0.03},
    {"path": "/composite/sobjects", "latency_ms": 8000, "probability": 0.02},
    {"path": "/query", "status": 500, "error_code": "UNKNOWN_EXCEPTION", "probability": 0.05},
    {"path": "/cometd", "action": "drop", "probability": 0.05},
]


@pytest.mark.timeout(900)
def test_kill_minus_nine_cycles_under_salesforce_faults_and_people_editing(inbound_stack: Stack) -> None:
    """SIGKILL at random moments while Salesforce fails, expires sessions, runs out of API calls, forgets
    streaming clients and cuts long polls, and people drag Events around: nothing lost, nothing doubled."""
    stack, rng = inbound_stack, random.Random(20261124)
    s, seed = stack.scheduler, stack.seed
    owner, member_a, member_b = (s.add_user(u) for u in seed.users)
    links = make_links(s, owner, 12)
    daemon = stack.daemon()
    for fault in FAULTS:
        stack.emulator.add_fault(**fault)
    traffic = Traffic(stack.dsn, links, [member_a, member_b], seed.contacts + seed.leads[:1], OPERATIONS, 7)
    saboteur = Saboteur(stack.emulator, 11)
    person = Person(stack.emulator, seed.users[1])
    daemon.start()
    traffic.start()
    saboteur.start()
    moved = 0
    for _ in range(KILL_CYCLES):
        deadline = time.monotonic() + rng.uniform(1.0, 4.0)
        while time.monotonic() < deadline:
            moved += _person_drags_an_event(stack, person, rng)
            time.sleep(0.3)
        daemon.kill9()
        daemon.start()
    traffic.join()
    saboteur.stop.set()
    saboteur.join()
    assert traffic.error is None, traffic.error
    stack.emulator.clear_faults()
    # Change events can be missed (Salesforce drops them too: gaps, retention); reconciliation is the net.
    # How many person edits the stream missed is reported, so a regression in the stream shows up here.
    missed = _reconcile_through_the_daemon(stack, daemon)
    _converged(stack, traffic)
    daemon.wait_started()
    assert daemon.terminate() == 0
    assert len(stack.emulator.records("Mogli_Event__c")) == len(links)
    assert_logs_clean(daemon)
    _report(
        "kill_9_with_salesforce_faults",
        kills=KILL_CYCLES,
        operations=dict(traffic.done),
        bookings=len(traffic.bookings),
        person_edits=moved,
        edits_repaired_by_reconcile=missed,
        **saboteur.count,
        api_requests=stack.emulator.stats()["api_requests"]["total"],
        lost=0,
        doubled=0,
    )


def _reconcile_through_the_daemon(stack: Stack, daemon: DaemonProcess) -> int:
    """Let pushes settle, then `mogli-bridge reconcile` through the running daemon; returns the repairs."""
    wait_until(
        lambda: all(a["state"] != "pending" for a in ledger_activities(stack.ledger_url).values()),
        timeout=120,
        what="the pushes to settle",
    )
    time.sleep(3.0)  # change events in flight reach the daemon before the reconciliation reads the org
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "--config", str(daemon.config), "reconcile", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return int(json.loads(out.stdout)["repaired"])


def _person_drags_an_event(stack: Stack, person: Person, rng: random.Random) -> int:
    """A person moves one of the bridge's Events by an hour in Salesforce (the scheduler wins it back)."""
    events = [e for e in stack.emulator.records("Event") if e.get("Scheduling_Booking_Id__c")]
    if not events:
        return 0
    event = rng.choice(events)
    fields = {"StartDateTime": "2030-01-01T10:00:00Z", "EndDateTime": "2030-01-01T11:00:00Z"}
    for _ in range(2):
        try:
            person.update("Event", event["Id"], fields)
            return 1
        except HttpError as exc:
            if exc.status != 401:  # e.g. the Event was deleted meanwhile; a person would shrug
                return 0
            stack.emulator.forget_token()  # the saboteur expired every session, ours too
    return 0


@pytest.mark.timeout(600)
def test_postgres_restart_and_walsender_kills_mid_stream(stack: Stack, pg_cluster: LocalPostgres) -> None:
    """The scheduling database restarts and its walsender is killed twice while bookings stream in."""
    s, seed = stack.scheduler, stack.seed
    owner, member = s.add_user(seed.users[0]), s.add_user(seed.users[1])
    links = make_links(s, owner, 6)
    daemon = stack.daemon()
    daemon.start()
    traffic = Traffic(stack.dsn, links, [member], seed.contacts, OPERATIONS, 3)
    traffic.start()
    for _ in range(2):
        time.sleep(1.5)
        _kill_walsenders(pg_cluster)
    time.sleep(1.0)
    pg_cluster.restart(mode="fast")
    traffic.join()
    assert traffic.error is None, traffic.error
    s.conn = psycopg2.connect(stack.dsn)
    s.conn.autocommit = True
    _converged(stack, traffic)
    daemon.wait_started()
    assert daemon.terminate() == 0
    _report(
        "postgres_restart_and_walsender_kills",
        walsender_kills=2,
        restarts=1,
        bookings=len(traffic.bookings),
        lost=0,
        doubled=0,
    )


def _kill_walsenders(pg: LocalPostgres) -> None:
    conn = psycopg2.connect(pg.dsn())
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'walsender'")
    conn.close()


@pytest.mark.timeout(600)
def test_ledger_database_unavailable_for_a_while(stack: Stack) -> None:
    """The ledger's PostgreSQL stops for seconds mid-stream: the daemon waits, resumes, loses nothing."""
    ledger_pg = LocalPostgres().start()
    try:
        stack.ledger_url = ledger_pg.create_database("ledger").replace(
            "postgresql://", "postgresql+psycopg2://"
        )
        s, seed = stack.scheduler, stack.seed
        owner, member = s.add_user(seed.users[0]), s.add_user(seed.users[1])
        links = make_links(s, owner, 6)
        daemon = stack.daemon()
        daemon.start()
        traffic = Traffic(stack.dsn, links, [member], seed.contacts, OPERATIONS, 5)
        traffic.start()
        time.sleep(2.0)
        ledger_pg.stop(remove=False, mode="fast")
        time.sleep(5.0)
        ledger_pg.start()
        traffic.join()
        assert traffic.error is None, traffic.error
        _converged(stack, traffic)
        assert daemon.alive(), "the daemon waited for the ledger instead of dying"
        daemon.wait_started()
        assert daemon.terminate() == 0
        _report("ledger_unavailable", seconds_down=5, bookings=len(traffic.bookings), lost=0, doubled=0)
    finally:
        ledger_pg.stop()


@pytest.mark.timeout(300)
def test_two_daemons_started_at_once_only_one_does_work(stack: Stack) -> None:
    """Two `run` processes with one configuration, started together: one works, one waits; all agree."""
    s, seed = stack.scheduler, stack.seed
    owner, member = s.add_user(seed.users[0]), s.add_user(seed.users[1])
    links = make_links(s, owner, 3)
    first = stack.daemon("first")
    second = DaemonProcess(first.config, stack.workdir, "second")
    stack.daemons.append(second)
    first.start()
    second.start()
    traffic = Traffic(stack.dsn, links, [member], seed.contacts, 200, 9)
    traffic.start()
    traffic.join()
    _converged(stack, traffic)
    started = [d for d in (first, second) if any(e.get("event") == "daemon.started" for e in d.log_lines())]
    standby = [d for d in (first, second) if any(e.get("event") == "daemon.standby" for e in d.log_lines())]
    assert len(started) == 1 and len(standby) == 1
    for d in (first, second):
        d.wait_started()
        assert d.terminate() == 0
