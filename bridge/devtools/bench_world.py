"""One benchmark scenario: a scheduler database, an emulator process, a ledger and a daemon process.

The bench (bridge/devtools/bench.py) builds a `BenchWorld` per workload; this module knows how to fill
the scheduler fast (one INSERT ... SELECT generate_series per table), how to watch Events appear in the
emulator (the `/__emulator/created/Event` cursor route, which carries each record's commit time) and how
to read the daemon's peak memory (VmHWM).
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2

from bridge.devtools.localpg import LocalPostgres
from bridge.devtools.stack import (
    DaemonProcess,
    EmulatorProcess,
    SalesforceSeed,
    Scheduler,
    http_json,
    seed_salesforce,
    write_config,
)

SCHEMA_SQL = Path(__file__).parents[1] / "schema" / "scheduler_schema.sql"
LINK_TYPES = ("one_on_one", "round_robin", "rsvp")
SF_USERS = 10
SEED_CONTACTS = 100
SEED_LEADS = 30
SEED_ACCOUNTS = 20
# The production defaults for REST calls and the streaming watchdog, not the test config's 5 s: on a loaded
# machine a 5 s timeout abandons calls the emulator then still answers, and a 5 s stall time takes an idle
# long poll (110 s) past 25 s for a stall, rebuilds the client and follows it with a gap reconciliation that
# reads back every Event the burst wrote (the peak memory of a long burst was that re-read).
DAEMON_ENV = {
    "MOGLI_BRIDGE_SALESFORCE__REQUEST_TIMEOUT_SECONDS": "60",
    "MOGLI_BRIDGE_SALESFORCE__MAX_ATTEMPTS": "6",
    "MOGLI_BRIDGE_SYNC__STREAMING_STALL_SECONDS": "60",
}
BOOKING_EXTERNAL_ID = "Scheduling_Booking_Id__c"
API = "/services/data/v60.0"
COLLECTION_SIZE = 200  # records per sObject Collections request (Salesforce's maximum)
OWNER_CHANGED = "salesforce.owner_changed"


@dataclass(frozen=True, slots=True)
class DaemonMode:
    """How the daemon under test is configured: pipelined (the defaults) or naive."""

    name: str
    env: dict[str, str] = field(default_factory=dict)


PIPELINED = DaemonMode("pipelined")
# One record per REST call and one call at a time: what a straightforward integration does.
NAIVE = DaemonMode(
    "naive", {"MOGLI_BRIDGE_SYNC__BATCH_SIZE": "1", "MOGLI_BRIDGE_SALESFORCE__MAX_IN_FLIGHT": "1"}
)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100.0 * len(ordered))))
    return ordered[rank - 1]


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time the process has used so far, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def machine_cpu_seconds() -> float:
    """CPU seconds every process of the machine has used (busy time of all CPUs, from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set (VmHWM) in MiB, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return None


class CreatedWatcher:
    """Follows the Events the emulator commits, by booking id, with their commit times (epoch seconds)."""

    def __init__(self, emulator_url: str) -> None:
        self._url = f"{emulator_url}/__emulator/created/Event"
        self._cursor = 0
        self.seen: dict[str, float] = {}

    def poll(self) -> int:
        """Fetch what was created since the last poll; returns how many new Events arrived."""
        new = 0
        while True:
            _, body = http_json(
                "GET", f"{self._url}?after={self._cursor}&field={BOOKING_EXTERNAL_ID}&limit=20000", timeout=30
            )
            for record in body["records"]:
                booking = record["value"]
                if booking is not None and booking not in self.seen:
                    self.seen[booking] = float(record["at"])
                    new += 1
            more = body["after"] != self._cursor and len(body["records"]) >= 20000
            self._cursor = body["after"]
            if not more:
                return new


class BenchWorld:
    """A fresh scheduler database, emulator and ledger; the daemon is started by the caller."""

    def __init__(
        self,
        pg: LocalPostgres,
        workdir: Path,
        name: str,
        latency_ms: int,
        mode: DaemonMode,
        ledger: str = "sqlite",
        transport: str = "cometd",
    ) -> None:
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True)
        self.name = name
        self.dsn = pg.create_database(f"bench_{name}")
        with psycopg2.connect(self.dsn) as conn, conn.cursor() as cur:
            cur.execute(SCHEMA_SQL.read_text())
        self.scheduler = Scheduler(self.dsn)
        self.emulator = EmulatorProcess(self.workdir, latency_ms=0, pubsub=transport == "pubsub")
        self.seed: SalesforceSeed = seed_salesforce(
            self.emulator, users=SF_USERS, contacts=SEED_CONTACTS, leads=SEED_LEADS, accounts=SEED_ACCOUNTS
        )
        self.emulator.control("latency", {"latency_ms": latency_ms})
        self.ledger_path = self.workdir / "ledger.sqlite3"
        self.ledger_dsn = pg.create_database(f"ledger_{name}") if ledger == "postgresql" else None
        config = write_config(
            self.workdir / "bridge.toml",
            dsn=self.dsn,
            ledger_url=self.ledger_dsn or f"sqlite:///{self.ledger_path}",
            emulator_url=self.emulator.url,
            slot=f"bench_{name}",
            backfill="since:2000-01-01",
        )
        env = {**DAEMON_ENV, **mode.env, **(self.emulator.pubsub_env() if transport == "pubsub" else {})}
        self.daemon = DaemonProcess(config, self.workdir, "daemon", env=env)
        self.user_ids: list[str] = []
        self.link_ids: list[str] = []
        self.link_types: list[str] = []
        self.watcher = CreatedWatcher(self.emulator.url)

    def close(self) -> None:
        """Stop the daemon and the emulator, close connections."""
        if self.daemon.alive():
            self.daemon.terminate(timeout=60)
        self.scheduler.close()
        self.emulator.stop()

    # ------------------------------------------------------------------------------ workload

    def add_links(self, count: int) -> None:
        """Scheduler users (one per Salesforce user) and `count` links of all three types."""
        with self.scheduler.conn.cursor() as cur:
            cur.execute(
                "INSERT INTO scheduler.users (id, email, full_name, salesforce_user_id) "
                "SELECT gen_random_uuid(), 'host' || i || '@example.com', 'Host Person', u "
                "FROM unnest(%s::text[]) WITH ORDINALITY AS t(u, i) RETURNING id",
                (self.seed.users,),
            )
            self.user_ids = [str(r[0]) for r in cur.fetchall()]
            cur.execute(
                "INSERT INTO scheduler.scheduling_links (id, link_type, owner_id, title, description, "
                "duration_minutes) SELECT gen_random_uuid(), (%s::text[])[1 + i %% 3], "
                "(%s::uuid[])[1 + i %% %s], 'Link ' || i, 'Booked through the benchmark', 30 "
                "FROM generate_series(0, %s - 1) AS i RETURNING id, link_type",
                (list(LINK_TYPES), self.user_ids, len(self.user_ids), count),
            )
            rows = cur.fetchall()
        self.link_ids = [str(r[0]) for r in rows]
        self.link_types = [str(r[1]) for r in rows]

    def add_bookings(self, count: int, offset: int = 0) -> None:
        """`count` bookings in one transaction, spread over the links; ~60% Contacts, 20% Leads, 10%
        Accounts, 10% nothing related."""
        related = self._related_pool()
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
        with self.scheduler.conn.cursor() as cur:
            cur.execute(
                "INSERT INTO scheduler.bookings (id, link_id, assigned_user_id, start_at, end_at, status, "
                "invitee_name, invitee_email, related_record_id) "
                "SELECT gen_random_uuid(), (%(links)s::uuid[])[1 + i %% %(nl)s], "
                "CASE WHEN (%(types)s::text[])[1 + i %% %(nl)s] = 'round_robin' "
                "     THEN (%(users)s::uuid[])[1 + i %% %(nu)s] END, "
                "%(start)s + (i %% 10000) * interval '1 minute', "
                "%(start)s + (i %% 10000) * interval '1 minute' + interval '30 minutes', 'scheduled', "
                "'Invitee Person', 'invitee' || i || '@example.org', (%(related)s::text[])[1 + i %% %(nr)s] "
                "FROM generate_series(%(first)s, %(last)s) AS i",
                {
                    "links": self.link_ids,
                    "nl": len(self.link_ids),
                    "types": self.link_types,
                    "users": self.user_ids,
                    "nu": len(self.user_ids),
                    "start": start,
                    "related": related,
                    "nr": len(related),
                    "first": offset,
                    "last": offset + count - 1,
                },
            )

    def _related_pool(self) -> list[str | None]:
        """Ten slots: six Contacts, two Leads, one Account, one empty (cycled by booking number)."""
        s = self.seed
        return [*s.contacts[:6], *s.leads[:2], s.accounts[0], None]

    def book_one(self, index: int) -> tuple[str, float]:
        """Commit one booking in its own transaction; returns its id and the wall time right after COMMIT."""
        booking_id = str(uuid.uuid4())
        related = self._related_pool()
        link = index % len(self.link_ids)
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2, minutes=index)
        self.scheduler.execute(
            "INSERT INTO scheduler.bookings (id, link_id, assigned_user_id, start_at, end_at, status, "
            "invitee_name, invitee_email, related_record_id) VALUES (%s,%s,%s,%s,%s,'scheduled',"
            "'Invitee Person',%s,%s)",
            (
                booking_id,
                self.link_ids[link],
                self.user_ids[index % len(self.user_ids)] if self.link_types[link] == "round_robin" else None,
                start,
                start + timedelta(minutes=30),
                f"steady{index}@example.org",
                related[index % len(related)],
            ),
        )
        return booking_id, time.time()

    # ------------------------------------------------------------------------------ observing

    def api_requests(self) -> int:
        """REST requests the emulator has answered so far (control routes and token requests excluded)."""
        return int(self.emulator.stats()["api_requests"]["total"])

    def ledger_counts(self) -> dict[str, int]:
        """Activities by state, read from the ledger (SQLite's WAL lets us read beside the daemon)."""
        if self.ledger_dsn is not None:
            return self._postgres_ledger_counts(self.ledger_dsn)
        if not self.ledger_path.exists():
            return {}
        conn = sqlite3.connect(f"file:{self.ledger_path}?mode=ro", uri=True, timeout=30)
        try:
            rows: Iterator[Any] = conn.execute("SELECT state, COUNT(*) FROM activities GROUP BY state")
            return {str(state): int(n) for state, n in rows}
        except sqlite3.OperationalError:
            return {}  # not migrated yet
        finally:
            conn.close()

    @staticmethod
    def _postgres_ledger_counts(dsn: str) -> dict[str, int]:
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass('activities') IS NOT NULL")
            row = cur.fetchone()
            if not row or not row[0]:
                return {}
            cur.execute("SELECT state, COUNT(*) FROM activities GROUP BY state")
            return {str(state): int(n) for state, n in cur.fetchall()}

    def daemon_started_at(self) -> float | None:
        """Wall time at which the daemon logged `daemon.started` (its imports and set-up done)."""
        for line in self.daemon.log_lines():
            if line.get("event") == "daemon.started" and isinstance(line.get("timestamp"), str):
                return datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()
        return None

    def daemon_cpu_seconds(self) -> float:
        """CPU seconds the running daemon has used so far."""
        proc = self.daemon.proc
        used = cpu_seconds(proc.pid) if proc is not None else None
        if used is None:
            raise RuntimeError(f"the daemon is not running; see {self.daemon.log_path}")
        return used

    def owner_changes_applied(self) -> dict[str, float]:
        """Booking id -> wall time (epoch seconds) of the first `salesforce.owner_changed` journal entry:
        when a person's reassignment of its Event took effect in the ledger."""
        query = "SELECT entity_key, at FROM journal WHERE direction = 'inbound' AND action = %s ORDER BY id"
        if self.ledger_dsn is not None:
            with psycopg2.connect(self.ledger_dsn) as conn, conn.cursor() as cur:
                cur.execute(query, (OWNER_CHANGED,))
                rows = cur.fetchall()
        else:
            lite = sqlite3.connect(f"file:{self.ledger_path}?mode=ro", uri=True, timeout=30)
            try:
                rows = lite.execute(query.replace("%s", "?"), (OWNER_CHANGED,)).fetchall()
            except sqlite3.OperationalError:
                rows = []  # not migrated yet
            finally:
                lite.close()
        applied: dict[str, float] = {}
        for key, at in rows:
            applied.setdefault(str(key), _epoch(at))
        return applied

    def streaming_subscribed(self) -> bool:
        """True once the daemon's change stream is connected (CometD) or subscribed (Pub/Sub)."""
        if self.emulator.grpc_port is not None:
            return int(self.emulator.pubsub_stats()["open_streams"]) >= 1
        return int(self.emulator.stats()["streaming_clients"]) >= 1

    def events_by_booking(self) -> dict[str, tuple[str, str]]:
        """Booking id -> (Event id, OwnerId) of every Event the daemon wrote."""
        return {
            str(e[BOOKING_EXTERNAL_ID]): (str(e["Id"]), str(e["OwnerId"]))
            for e in self.emulator.records("Event")
            if e.get(BOOKING_EXTERNAL_ID)
        }

    def reassign(self, changes: list[tuple[str, str]], person: str, label: str) -> float:
        """Reassign Events [(Event id, new OwnerId)] as `person` (not the bridge's user), in sObject
        Collections requests; each record also gets its own Subject, so that no two changes are merged into
        one change event. Returns the wall time right after the last request returned."""
        headers = {"Authorization": f"Bearer {self.emulator.token()}", "X-Emulator-User": person}
        for first in range(0, len(changes), COLLECTION_SIZE):
            chunk = changes[first : first + COLLECTION_SIZE]
            records = [
                {"attributes": {"type": "Event"}, "Id": eid, "OwnerId": owner, "Subject": f"{label} {n}"}
                for n, (eid, owner) in enumerate(chunk, start=first)
            ]
            body = {"allOrNone": True, "records": records}
            _, results = http_json(
                "PATCH", f"{self.emulator.url}{API}/composite/sobjects", body, headers=headers
            )
            if not all(r["success"] for r in results):
                raise RuntimeError(f"the org refused a reassignment: {results[:3]}")
        return time.time()

    def daemon_peak_rss_mb(self) -> float | None:
        """VmHWM of the running daemon."""
        proc = self.daemon.proc
        return peak_rss_mb(proc.pid) if proc is not None else None


def _epoch(value: Any) -> float:
    """A journal time (a datetime from PostgreSQL, ISO text from SQLite; naive means UTC) as epoch seconds."""
    at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
