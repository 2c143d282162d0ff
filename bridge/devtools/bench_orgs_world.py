"""One many-org bench scenario: a scheduler database, one emulator hosting the customer orgs, a SQLite ledger
and a daemon in tenancy mode (the bench itself is bridge/devtools/bench_orgs.py); or, with `workers`, a
PostgreSQL ledger and that many `run` processes on the one configuration (each its own admin port).

The orgs, their users and connections come from the tenancy test world (bridge/devtools/tenants.py); this
module fills their links and bookings fast (one INSERT ... SELECT generate_series per org), follows the Events
each org commits (the `/__emulator/created/Event` cursor route of each org, which carries commit times), and
reads what the figures need: each org's API counter and streaming clients, the ledger's activity states.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2

from bridge.devtools.bench_world import (
    DAEMON_ENV,
    LINK_TYPES,
    SCHEMA_SQL,
    CreatedWatcher,
    cpu_seconds,
    peak_rss_mb,
)
from bridge.devtools.localpg import LocalPostgres, free_port
from bridge.devtools.stack import (
    DaemonProcess,
    EmulatorProcess,
    Scheduler,
    http_json,
    write_config,
)
from bridge.devtools.tenants import TenantOrg, TenantWorld

SETTLED = ("synced", "cancelled", "failed", "skipped")
HOSTS_PER_ORG = 3


def links_for(bookings: int) -> int:
    """How many links an org of `bookings` bookings gets: one per 50 bookings, at least one, at most 200."""
    return max(1, min(200, bookings // 50))


class OrgsWorld:
    """A fresh scheduler database, an emulator with `orgs` customer orgs, a daemon (the caller starts it);
    with `workers` (1 or more), that many worker processes on a PostgreSQL ledger instead."""

    def __init__(
        self, pg: LocalPostgres, workdir: Path, name: str, orgs: int, latency_ms: int, *, workers: int = 0
    ) -> None:
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True)
        self.name = name
        self.dsn = pg.create_database(f"bench_{name}")
        with psycopg2.connect(self.dsn) as conn, conn.cursor() as cur:
            cur.execute(SCHEMA_SQL.read_text())
        self.scheduler = Scheduler(self.dsn)
        self.emulator = EmulatorProcess(self.workdir, latency_ms=0)
        self.world = TenantWorld(self.emulator, self.scheduler, self.workdir)
        for n in range(orgs):
            self.world.add_org(f"Customer {n:04d}", hosts=HOSTS_PER_ORG)
        for url in self.urls():  # set after seeding, so that seeding is quick
            http_json("POST", f"{url}/__emulator/latency", {"latency_ms": latency_ms})
        self.ledger_path = self.workdir / "ledger.sqlite3"
        self.ledger_dsn = pg.create_database(f"ledger_{name}") if workers else None
        config = write_config(
            self.workdir / "bridge.toml",
            dsn=self.dsn,
            ledger_url=self.ledger_dsn or f"sqlite:///{self.ledger_path}",
            emulator_url=self.emulator.url,
            slot=f"bench_{name}",
            auth="jwt",
            salesforce_extra=f'private_key_file = "{self.world.key_path}"\n',
            extra="\n[tenancy]\nenabled = true\n",
        )
        # One configuration; each worker only listens on its own admin port.
        self.daemons = [
            DaemonProcess(
                config,
                self.workdir,
                f"worker{k}" if workers else "daemon",
                env={**DAEMON_ENV, "MOGLI_BRIDGE_ADMIN__LISTEN": f"127.0.0.1:{free_port()}"},
            )
            for k in range(max(1, workers))
        ]
        self.daemon = self.daemons[0]
        self.links: dict[str, list[tuple[str, str]]] = {}  # org id -> [(link id, link type)]
        self.watchers = {org.org_id: CreatedWatcher(org.url) for org in self.world.orgs}

    @property
    def orgs(self) -> list[TenantOrg]:
        """The customer orgs, in creation order."""
        return self.world.orgs

    def urls(self) -> list[str]:
        """The main (default) org's URL and every customer org's."""
        return [self.emulator.url, *(org.url for org in self.world.orgs)]

    def close(self) -> None:
        """Stop the daemons and the emulator, close connections."""
        for daemon in self.daemons:
            if daemon.alive():
                daemon.terminate(timeout=120)
        self.scheduler.close()
        self.emulator.stop()

    def start_daemon(self) -> float:
        """`setup`, then start `run`; returns the wall time of the start."""
        setup = self.daemon.setup()
        if setup.returncode != 0:
            raise RuntimeError(f"mogli-bridge setup failed: {setup.stdout}{setup.stderr}")
        started = time.time()
        for daemon in self.daemons:
            daemon.start()
        return started

    # ------------------------------------------------------------------------------ workload

    def add_links(self, org: TenantOrg, count: int) -> None:
        """`count` links of all three types, owned in turn by the org's booking users."""
        with self.scheduler.conn.cursor() as cur:
            cur.execute(
                "INSERT INTO scheduler.scheduling_links (id, link_type, owner_id, title, description, "
                "duration_minutes) SELECT gen_random_uuid(), (%s::text[])[1 + i %% 3], "
                "(%s::uuid[])[1 + i %% %s], 'Link ' || i, 'Booked through the benchmark', 30 "
                "FROM generate_series(0, %s - 1) AS i RETURNING id, link_type",
                (list(LINK_TYPES), org.users, len(org.users), count),
            )
            self.links[org.org_id] = [(str(r[0]), str(r[1])) for r in cur.fetchall()]

    def add_bookings(
        self, org: TenantOrg, count: int, offset: int = 0, conn: Scheduler | None = None
    ) -> None:
        """`count` bookings of one org in one transaction, spread over its links and related records."""
        links = self.links[org.org_id]
        related = [*org.contacts, *org.leads, *org.accounts, None]
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
        with (conn or self.scheduler).conn.cursor() as cur:
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
                    "links": [link for link, _ in links],
                    "nl": len(links),
                    "types": [kind for _, kind in links],
                    "users": org.users,
                    "nu": len(org.users),
                    "start": start,
                    "related": related,
                    "nr": len(related),
                    "first": offset,
                    "last": offset + count - 1,
                },
            )

    def book_one(self, org: TenantOrg, index: int, conn: Scheduler) -> tuple[str, float]:
        """Commit one booking of `org` in its own transaction; its id and the wall time right after COMMIT."""
        booking_id = str(uuid.uuid4())
        link, kind = self.links[org.org_id][index % len(self.links[org.org_id])]
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2, minutes=index)
        conn.add_booking(
            link,
            start=start,
            related=org.contacts[index % len(org.contacts)],
            assigned=org.users[index % len(org.users)] if kind == "round_robin" else None,
            booking_id=booking_id,
        )
        return booking_id, time.time()

    # ------------------------------------------------------------------------------ observing

    def api_requests(self) -> int:
        """REST requests every org of the emulator (the default org included) has answered so far."""
        stats = (http_json("GET", f"{url}/__emulator/stats")[1] for url in self.urls())
        return sum(int(s["api_requests"]["total"]) for s in stats)

    def api_requests_by_route(self) -> dict[str, int]:
        """REST requests so far by route (method and path pattern), summed over every org of the emulator."""
        routes: dict[str, int] = {}
        for url in self.urls():
            for route, n in http_json("GET", f"{url}/__emulator/stats")[1]["api_requests"][
                "by_route"
            ].items():
                routes[route] = routes.get(route, 0) + int(n)
        return routes

    def streaming_clients(self) -> int:
        """Connected CometD clients over the customer orgs."""
        return sum(
            int(http_json("GET", f"{org.url}/__emulator/stats")[1]["streaming_clients"]) for org in self.orgs
        )

    def ledger_counts(self, org: TenantOrg | None = None) -> dict[str, int]:
        """Activities by state (of one org when given), read from the ledger."""
        if self.ledger_dsn is not None:
            return self._pg_counts(org)
        if not self.ledger_path.exists():
            return {}
        query = "SELECT state, COUNT(*) FROM activities GROUP BY state"
        params: tuple[str, ...] = ()
        if org is not None:
            query = "SELECT state, COUNT(*) FROM activities WHERE org_id = ? GROUP BY state"
            params = (org.org_id,)
        conn = sqlite3.connect(f"file:{self.ledger_path}?mode=ro", uri=True, timeout=30)
        try:
            rows = conn.execute(query, params)
            return {str(state): int(n) for state, n in rows}
        except sqlite3.OperationalError:
            return {}  # not migrated yet
        finally:
            conn.close()

    def _pg_counts(self, org: TenantOrg | None) -> dict[str, int]:
        assert self.ledger_dsn is not None
        query = "SELECT state, COUNT(*) FROM activities GROUP BY state"
        params: tuple[str, ...] = ()
        if org is not None:
            query = "SELECT state, COUNT(*) FROM activities WHERE org_id = %s GROUP BY state"
            params = (org.org_id,)
        conn = psycopg2.connect(self.ledger_dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(query, params)
                return {str(state): int(n) for state, n in cur.fetchall()}
        except psycopg2.Error:
            return {}  # not migrated yet
        finally:
            conn.close()

    def orgs_per_worker(self) -> list[int]:
        """How many orgs each live worker holds a lease of now (PostgreSQL ledger), most first."""
        if self.ledger_dsn is None:
            return []
        conn = psycopg2.connect(self.ledger_dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT worker_id, COUNT(*) FROM org_leases WHERE worker_id IS NOT NULL "
                    "AND lease_until > now() GROUP BY worker_id"
                )
                return sorted((int(n) for _, n in cur.fetchall()), reverse=True)
        finally:
            conn.close()

    def drained(self, bookings: int, org: TenantOrg | None = None) -> bool:
        """True when `bookings` activities (of one org when given) are settled and none is pending."""
        counts = self.ledger_counts(org)
        return sum(counts.get(s, 0) for s in SETTLED) >= bookings and not counts.get("pending")

    def poll(self, orgs: Sequence[TenantOrg]) -> None:
        """Fetch the Events these orgs committed since the last poll."""
        for org in orgs:
            self.watchers[org.org_id].poll()

    def seen(self, org: TenantOrg) -> dict[str, float]:
        """Booking id -> commit time (epoch seconds) of each Event the org holds, as polled so far."""
        return self.watchers[org.org_id].seen

    def cpu_seconds(self) -> float:
        """CPU seconds the running daemons (every worker) have used so far."""
        total = 0.0
        for daemon in self.daemons:
            proc = daemon.proc
            used = cpu_seconds(proc.pid) if proc is not None else None
            if used is None:
                raise RuntimeError(f"the daemon is not running; see {daemon.log_path}")
            total += used
        return total

    def emulator_cpu_seconds(self) -> float:
        """CPU seconds the emulator process (every org) has used so far."""
        return cpu_seconds(self.emulator.proc.pid) or 0.0

    def peak_rss_mb(self) -> float | None:
        """VmHWM of the running daemon (the largest worker's)."""
        peaks = [peak_rss_mb(d.proc.pid) for d in self.daemons if d.proc is not None]
        return max((p for p in peaks if p is not None), default=None)

    def rss_mb(self) -> float | None:
        """VmRSS (resident now) of the running daemon."""
        proc = self.daemon.proc
        if proc is None:
            return None
        try:
            text = Path(f"/proc/{proc.pid}/status").read_text()
        except OSError:
            return None
        lines = [ln for ln in text.splitlines() if ln.startswith("VmRSS:")]
        return int(lines[0].split()[1]) / 1024.0 if lines else None

    def check_alive(self) -> None:
        """RuntimeError when a daemon has exited."""
        for daemon in self.daemons:
            if not daemon.alive():
                raise RuntimeError(f"the daemon exited; see {daemon.log_path}")
