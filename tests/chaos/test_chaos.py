"""The chaos suite: break everything that can break, then prove scheduler, ledger and Salesforce agree.

`make test` runs the short version (5 kill cycles, 600 operations); `make chaos` the long one
(`MOGLI_CHAOS=long`: 20 cycles, 3,000 operations). Each scenario is judged before anything repairs: the
invariant checker and a dry-run reconciliation find zero differences, nothing is lost or doubled (counted),
each injected fault is shown to have hit; the figures go to `$MOGLI_CHAOS_REPORT` (JSON lines) when set.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from bridge.devtools.localpg import CRASH_SAFE, LocalPostgres
from bridge.devtools.stack import (
    DaemonProcess,
    EmulatorProcess,
    HttpError,
    Scheduler,
    ledger_activities,
    wait_until,
)
from tests.conftest import SCHEMA_SQL
from tests.e2e.conftest import Stack, assert_logs_clean, make_stack
from tests.e2e.inbound_support import Person

from .conftest import KILL_CYCLES, OPERATIONS
from .traffic import Traffic, make_links
from .verdict import (
    EditsNotRestored,
    Kills,
    bridge_requests,
    count_logged,
    fault_hits,
    install_faults,
    report,
    rows_in_flight,
    verdict,
)


class Saboteur(threading.Thread):
    """Keeps breaking Salesforce while it runs: sessions, streaming clients, the daily API allocation.
    `hits` counts the acts that hit something: a live session expired, a connected client forgotten, an
    exhausted allocation that refused the daemon a call (`limit_refusals` counts its refusals so far)."""

    def __init__(
        self, emulator: EmulatorProcess, seed: int, limit_refusals: Callable[[], int], transport: str
    ) -> None:
        super().__init__(daemon=True)
        self.emulator, self.rng = emulator, random.Random(seed)
        self.limit_refusals = limit_refusals
        self.stop = threading.Event()
        # CometD: the server forgets its clients (403::Unknown client); Pub/Sub: it cuts every open stream.
        self.stream_act = "clients_forgotten" if transport == "cometd" else "streams_cut"
        self.hits = {"sessions_expired": 0, self.stream_act: 0, "allocation_exhausted": 0}

    def run(self) -> None:
        """Every half second, one act of sabotage."""
        while not self.stop.wait(0.5):
            roll = self.rng.random()
            if roll < 0.5:
                self.hits["sessions_expired"] += self.emulator.control("sessions/expire")["expired"] > 0
            elif roll < 0.8:
                self.hits[self.stream_act] += self._break_the_stream() > 0
            else:
                self.hits["allocation_exhausted"] += self._exhaust_the_allocation()

    def _break_the_stream(self) -> int:
        """How many streaming clients or streams the act hit."""
        if self.stream_act == "clients_forgotten":
            return int(self.emulator.control("streaming/forget-clients")["forgotten"])
        return int(self.emulator.control("pubsub/cut")["cut"])

    def _exhaust_the_allocation(self) -> bool:
        """Use up the day's API calls for a second, or up to two until a call of the daemon's is refused."""
        before = self.limit_refusals()
        limits = self.emulator.control("limits", {})
        self.emulator.control("limits", {"used": limits["allocation"]})
        deadline = time.monotonic() + 2.0
        time.sleep(1.0)
        while self.limit_refusals() == before and time.monotonic() < deadline:
            time.sleep(0.2)
        self.emulator.control("limits", {"used": 0})
        return self.limit_refusals() > before


FAULTS = [
    {"path": "/composite/sobjects", "status": 503, "error_code": "SERVER_UNAVAILABLE", "probability": 0.10},
    {"path": "/composite/sobjects", "status": 400, "error_code": "UNABLE_TO_LOCK_ROW", "probability": 0.03},
    {"path": "/composite/sobjects", "action": "drop", "probability": 0.03},
    {"path": "/composite/sobjects", "latency_ms": 8000, "probability": 0.04},
    {"path": "/query", "status": 500, "error_code": "UNKNOWN_EXCEPTION", "probability": 0.10},
]
STREAM_FAULTS = {"cometd": [{"path": "/cometd", "action": "drop", "probability": 0.05}], "pubsub": []}
# Seconds between scheduler operations in the kill scenario (which goes on writing until the last kill).
KILL_PACE = 0.05
LIMIT_WAIT = "push.api_limit_wait"  # the daemon's log line when the org refused a call: allocation used up
SHUT_DOWN = "database system is shut down"  # PostgreSQL's log line at the end of a clean stop
DRAGGED_TO = "2030-01-01T10:00:00Z"  # where people drag the bridge's Events (the scheduler wins them back)


@pytest.mark.timeout(900)
def test_kill_minus_nine_cycles_under_salesforce_faults_and_people_editing(
    inbound_stack: Stack, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL at random moments of a working daemon while Salesforce fails, expires sessions, runs out of API
    calls, forgets streaming clients and cuts long polls (CometD) or cuts streams (Pub/Sub), and people drag
    Events around: every kill lands on a daemon with rows in flight, every fault hits; before any repair
    nothing is lost, doubled, drifted. Runs on both change-event transports."""
    stack, rng = inbound_stack, random.Random(20261124)
    # The saboteur's allocation comes back within seconds (a real org's rolling window frees calls slowly).
    monkeypatch.setenv("MOGLI_BRIDGE_SALESFORCE__API_BUDGET_RECHECK_SECONDS", "2")
    s, seed = stack.scheduler, stack.seed
    owner, member_a, member_b = (s.add_user(u) for u in seed.users)
    links = make_links(s, owner, 12)
    daemon = stack.daemon()
    install_faults(stack.emulator, FAULTS + STREAM_FAULTS[transport])
    contacts = seed.contacts + seed.leads[:1]
    kills_done = threading.Event()
    traffic = Traffic(
        stack.dsn, links, [member_a, member_b], contacts, OPERATIONS, 7, pace=KILL_PACE, until=kills_done
    )
    saboteur = Saboteur(stack.emulator, 11, lambda: _logged_text(daemon, LIMIT_WAIT), transport)
    person = Person(stack.emulator, seed.users[1])
    kills = Kills(
        requests=lambda: bridge_requests(stack.emulator),
        in_flight=lambda: rows_in_flight(stack.ledger_url, len(s.rows("bookings"))),
    )
    daemon.start()
    traffic.start()
    saboteur.start()
    moved = 0
    try:
        while kills.more_needed(KILL_CYCLES):
            kills.started(daemon)
            deadline = time.monotonic() + rng.uniform(1.0, 4.0)
            while time.monotonic() < deadline:
                moved += _person_drags_an_event(stack, person, rng)
                time.sleep(0.3)
            kills.kill(daemon)
            daemon.start()
    finally:
        kills_done.set()
        traffic.join()
        saboteur.stop.set()
        saboteur.join()
    moved += _until_every_fault_hit(stack, daemon, person, rng)
    assert traffic.error is None, traffic.error
    hits = fault_hits(stack.emulator)
    stack.emulator.clear_faults()
    assert all(hits.values()), f"fault rules that never fired: {hits}"
    assert all(saboteur.hits.values()), f"acts of sabotage that never hit: {saboteur.hits}"
    assert moved > 0, "nobody edited an Event: the inbound half of the scenario did not run"
    figures: dict[str, Any] = {
        "kills_landed": kills.landed,
        "kills_missed": len(kills.missed),
        "operations": dict(traffic.done),
        "person_edits": moved,
        "fault_hits": hits,
        **saboteur.hits,
        "api_limit_waits": count_logged(daemon, LIMIT_WAIT),
    }
    try:
        figures.update(verdict(stack, daemon, dragged_to=DRAGGED_TO[:11]))
    except EditsNotRestored as exc:  # the stream missed people's edits: counted in the report, then failed
        report(
            f"kill_9_with_salesforce_faults_{transport}",
            **figures,
            edits_not_restored=str(exc).split(" ", 1)[0],
        )
        raise
    daemon.wait_started()
    assert daemon.terminate() == 0
    assert_logs_clean(daemon)
    report(
        f"kill_9_with_salesforce_faults_{transport}",
        **figures,
        daemon_reconciliations=count_logged(daemon, "inbound.reconciled"),
        api_requests=stack.emulator.stats()["api_requests"]["total"],
    )


def _logged_text(daemon: DaemonProcess, event: str) -> int:
    """A cheap count of one event in the daemon's log (the saboteur polls it)."""
    return daemon.log_path.read_text(errors="replace").count(f'"{event}"')


def _until_every_fault_hit(
    stack: Stack, daemon: DaemonProcess, person: Person, rng: random.Random, timeout: float = 90
) -> int:
    """Keep people editing (the daemon writes each edit back) until every fault rule has fired at least once;
    while the query rule has not, a dry-run reconciliation reads the org through the daemon (it must finish
    under the faults; first the daemon's writes refresh its view of the API budget the saboteur spent).
    Returns the edits made; fails naming the rules that never fired."""
    started = time.monotonic()
    moved, deadline = 0, started + timeout
    while not all((hits := fault_hits(stack.emulator)).values()):
        assert time.monotonic() < deadline, f"fault rules that never fired: {hits}"
        moved += _person_drags_an_event(stack, person, rng)
        time.sleep(0.3)
        if time.monotonic() > started + 5 and any(n == 0 and "/query" in rule for rule, n in hits.items()):
            # A daemon that last saw the budget spent may pause the run until a write of its own refreshes it.
            daemon.reconcile(dry_run=True, allow_paused=True)
    return moved


def _person_drags_an_event(stack: Stack, person: Person, rng: random.Random) -> int:
    """A person moves one of the bridge's Events by an hour in Salesforce (the scheduler wins it back)."""
    events = [e for e in stack.emulator.records("Event") if e.get("Scheduling_Booking_Id__c")]
    if not events:
        return 0
    event = rng.choice(events)
    fields = {"StartDateTime": DRAGGED_TO, "EndDateTime": DRAGGED_TO.replace("T10", "T11")}
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
    """The scheduling database restarts cleanly and its walsender is killed twice while bookings stream in:
    each kill and the restart hit the running stream, and before any repair nothing is lost or doubled."""
    s, seed = stack.scheduler, stack.seed
    owner, member = s.add_user(seed.users[0]), s.add_user(seed.users[1])
    links = make_links(s, owner, 6)
    daemon = stack.daemon()
    daemon.start()
    daemon.wait_active()
    traffic = Traffic(stack.dsn, links, [member], seed.contacts, OPERATIONS, 3, pace=0.01)
    traffic.start()
    walsenders_killed = []
    for _ in range(2):
        time.sleep(1.5)
        walsenders_killed.append(_kill_walsenders(pg_cluster))
    time.sleep(1.0)
    shutdowns = pg_cluster.logged(SHUT_DOWN)
    pg_cluster.restart(mode="fast")
    restarts = pg_cluster.logged(SHUT_DOWN) - shutdowns
    traffic.join()
    assert traffic.error is None, traffic.error
    _reconnect(s)
    figures = verdict(stack, daemon)
    daemon.wait_started()
    assert daemon.terminate() == 0
    assert all(walsenders_killed), f"walsenders terminated per kill: {walsenders_killed}"
    assert restarts == 1, f"the server log shows {restarts} clean shutdowns"
    assert traffic.reconnects > 0, "the restart came after the writer finished"
    reconnected = count_logged(daemon, "source.connected") - 1
    assert reconnected >= 3, f"the stream reconnected {reconnected} times for 2 kills and a restart"
    report(
        "postgres_restart_and_walsender_kills",
        walsender_kills=sum(walsenders_killed),
        restarts=restarts,
        writer_reconnects=traffic.reconnects,
        stream_reconnects=reconnected,
        **figures,
    )


def _kill_walsenders(pg: LocalPostgres) -> int:
    """Terminate every walsender; returns how many were terminated."""
    conn = psycopg2.connect(pg.dsn())
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'walsender'")
        killed = sum(1 for (ok,) in cur.fetchall() if ok)
    conn.close()
    return killed


def _reconnect(s: Scheduler) -> None:
    """The test's own scheduler connection, after the server went away under it."""
    s.conn = psycopg2.connect(s.dsn)
    s.conn.autocommit = True


def _crash_safe_cluster() -> LocalPostgres:
    """A private cluster that keeps every commit through a crash; shown to run with those settings."""
    pg = LocalPostgres(**CRASH_SAFE).start()
    running = {name: pg.setting(name) for name in CRASH_SAFE}
    assert running == dict.fromkeys(CRASH_SAFE, "on"), running
    return pg


def _scheduler_database(pg: LocalPostgres) -> str:
    """A database holding the reference scheduler schema; returns its DSN."""
    dsn = pg.create_database("scheduler")
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(SCHEMA_SQL.read_text())
        conn.commit()
    finally:
        conn.close()
    return dsn


def _synced(stack: Stack) -> int:
    return sum(a["state"] == "synced" for a in ledger_activities(stack.ledger_url).values())


@pytest.mark.timeout(600)
def test_postgres_crashes_of_the_source_and_the_ledger_lose_nothing(tmp_path: Path) -> None:
    """`pg_ctl stop -m immediate` of the scheduling database, then of a PostgreSQL ledger, both running with
    fsync and synchronous_commit on, while bookings flow: each crash hits (the writer and the stream are cut,
    the server recovers), and before any repair nothing is lost, doubled or drifted."""
    source_pg, ledger_pg = _crash_safe_cluster(), _crash_safe_cluster()
    try:
        with make_stack(tmp_path, _scheduler_database(source_pg)) as stack:
            stack.ledger_url = ledger_pg.create_database("ledger").replace(
                "postgresql://", "postgresql+psycopg2://"
            )
            s, seed = stack.scheduler, stack.seed
            owner, member = s.add_user(seed.users[0]), s.add_user(seed.users[1])
            links = make_links(s, owner, 6)
            daemon = stack.daemon()
            daemon.start()
            daemon.wait_active()
            traffic = Traffic(stack.dsn, links, [member], seed.contacts, OPERATIONS, 13, pace=0.01)
            traffic.start()
            wait_until(lambda: _synced(stack) >= 20, what="bookings to flow")
            source_pg.crash()
            source_pg.start()
            before = _synced(stack)
            wait_until(lambda: _synced(stack) > before, what="bookings to flow after the source crash")
            ledger_pg.crash()
            ledger_pg.start()
            traffic.join()
            assert traffic.error is None, traffic.error
            _reconnect(s)
            figures = verdict(stack, daemon)
            assert daemon.alive(), "the daemon waited out both crashes instead of dying"
            daemon.wait_started()
            assert daemon.terminate() == 0
            assert (source_pg.recoveries(), ledger_pg.recoveries()) == (1, 1), "a crash did not happen"
            assert traffic.reconnects > 0, "the source crashed after the writer finished"
            reconnected = count_logged(daemon, "source.connected") - 1
            ledger_waits = count_logged(daemon, "ingest.ledger_unavailable") + count_logged(
                daemon, "push.ledger_unavailable"
            )
            assert reconnected >= 1 and ledger_waits >= 1, (reconnected, ledger_waits)
            report(
                "postgres_crashes_fsync_on",
                source_crashes=source_pg.recoveries(),
                ledger_crashes=ledger_pg.recoveries(),
                writer_reconnects=traffic.reconnects,
                stream_reconnects=reconnected,
                ledger_waits=ledger_waits,
                **figures,
            )
    finally:
        source_pg.stop()
        ledger_pg.stop()


@pytest.mark.timeout(600)
def test_ledger_database_unavailable_for_a_while(stack: Stack) -> None:
    """The ledger's PostgreSQL stops cleanly for seconds mid-stream: the daemon waits (it says so), resumes,
    and before any repair nothing is lost or doubled."""
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
        daemon.wait_active()
        traffic = Traffic(stack.dsn, links, [member], seed.contacts, OPERATIONS, 5, pace=0.01)
        traffic.start()
        wait_until(lambda: _synced(stack) >= 20, what="bookings to flow")
        ledger_pg.stop(remove=False, mode="fast")
        time.sleep(5.0)
        ledger_pg.start()
        traffic.join()
        assert traffic.error is None, traffic.error
        figures = verdict(stack, daemon)
        assert daemon.alive(), "the daemon waited for the ledger instead of dying"
        daemon.wait_started()
        assert daemon.terminate() == 0
        ledger_waits = count_logged(daemon, "ingest.ledger_unavailable") + count_logged(
            daemon, "push.ledger_unavailable"
        )
        assert ledger_waits >= 1, "the outage never reached the daemon"
        report("ledger_unavailable", ledger_waits=ledger_waits, **figures)
    finally:
        ledger_pg.stop()


@pytest.mark.timeout(300)
def test_two_daemons_started_at_once_only_one_does_work(stack: Stack) -> None:
    """Two `run` processes with one configuration, started together: one works, one waits; before any repair
    nothing is lost, doubled or drifted."""
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
    assert traffic.error is None, traffic.error
    decided = ("daemon.started", "daemon.standby")
    wait_until(
        lambda: all(sum(count_logged(d, e) for e in decided) for d in (first, second)),
        what="both daemons to decide",
    )
    started = [d for d in (first, second) if count_logged(d, "daemon.started")]
    standby = [d for d in (first, second) if count_logged(d, "daemon.standby")]
    assert len(started) == 1 and len(standby) == 1
    figures = verdict(stack, started[0])
    for d in (first, second):
        d.wait_started()
        assert d.terminate() == 0
    report("two_daemons", **figures)
