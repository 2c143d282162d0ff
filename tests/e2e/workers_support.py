"""The several-workers e2e test's tools (issue 14): the workers as the ledger and their admin APIs show them,
continuous bookings from a thread, timings of takeovers, and the emulator's request logs turned into each
token's writing window per org (two writers of one org in overlapping windows is what fencing forbids).

Built on tests/e2e/tenancy_support.py and bridge/devtools/tenants.py, which are used, not changed.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from bridge.devtools.stack import DaemonProcess, Scheduler, http_json, ledger_connection, wait_until
from bridge.devtools.tenants import TenantWorld
from bridge.records.ledger import DEFAULT_ORG

ADMIN_TOKEN = "e2e-admin-token-value"  # write_config's default admin token
WRITES = frozenset({"POST", "PATCH", "PUT", "DELETE"})
DATA_PREFIX = "/services/data/"


# ------------------------------------------------------------------------------------------ the workers


def worker_id(daemon: DaemonProcess) -> str:
    """The worker id this run of the daemon logged at start (`daemon.started` of its pid)."""
    assert daemon.proc is not None
    pid = daemon.proc.pid

    def logged() -> str | None:
        for line in daemon.log_lines():
            if line.get("event") == "daemon.started" and line.get("pid") == pid and line.get("worker"):
                return str(line["worker"])
        return None

    found: str = wait_until(
        logged, timeout=60, interval=0.2, what=f"{daemon.log_path.name} to start as a worker"
    )
    return found


def admin_status(daemon: DaemonProcess) -> dict[str, Any]:
    """The worker's own GET /api/status (its admin.listen is in its config)."""
    match = re.search(r'listen = "127\.0\.0\.1:(\d+)"', daemon.config.read_text())
    assert match, f"no admin.listen in {daemon.config}"
    url = f"http://127.0.0.1:{match.group(1)}/api/status"
    _, body = http_json("GET", url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=20)
    assert isinstance(body, dict)
    return body


def served_count(ledger_url: str) -> int:
    """How many orgs workers serve: the default org, and every connected org not disconnected."""
    query = sa.text(
        "SELECT count(*) FROM orgs WHERE org_id = :default "
        "OR (connection = 'connected' AND state <> 'disconnected')"
    )
    with ledger_connection(ledger_url) as conn:
        return int(conn.execute(query, {"default": DEFAULT_ORG}).scalar_one())


def live_leases(ledger_url: str) -> dict[str, str]:
    """Org -> the worker holding a lease not expired by the database's clock."""
    query = sa.text(
        "SELECT org_id, worker_id FROM org_leases WHERE worker_id IS NOT NULL AND lease_until > now()"
    )
    with ledger_connection(ledger_url) as conn:
        return {str(org): str(worker) for org, worker in conn.execute(query)}


def readers(ledger_url: str) -> set[str]:
    """The live workers whose last heartbeat said they read the change stream."""
    query = sa.text("SELECT worker_id FROM workers WHERE reader AND lease_until > now()")
    with ledger_connection(ledger_url) as conn:
        return {str(w) for w in conn.execute(query).scalars()}


def lease_lockers(ledger_url: str) -> list[dict[str, Any]]:
    """The sessions holding a lock on `org_leases` (a fenced write's FOR SHARE shows as RowShareLock), with
    their state and how long their transaction has been open: what keeps a taker skipping an org."""
    query = sa.text(
        "SELECT a.pid, a.state, a.application_name, l.mode, "
        "round(extract(epoch FROM now() - a.xact_start)::numeric, 1) AS xact_seconds, "
        "left(a.query, 120) AS query "
        "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.relation = 'org_leases'::regclass AND l.granted AND a.pid <> pg_backend_pid()"
    )
    with ledger_connection(ledger_url) as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def why_not_served(ledger_url: str, stuck_worker: str) -> str:
    """What the ledger says when orgs are not served by the live workers: the orgs still leased to
    `stuck_worker`, every lease row, and the sessions locking `org_leases`."""
    with ledger_connection(ledger_url) as conn:
        rows = conn.execute(
            sa.text(
                "SELECT org_id, worker_id, epoch, lease_until, lease_until > now() AS live "
                "FROM org_leases WHERE worker_id = :w OR worker_id IS NULL OR lease_until <= now()"
            ),
            {"w": stuck_worker},
        ).mappings()
        leases = [dict(r) for r in rows]
    lockers = lease_lockers(ledger_url)
    return f"leases not held live by the others: {leases}; sessions locking org_leases: {lockers}"


def loads(leases: Mapping[str, str]) -> dict[str, int]:
    """How many orgs each worker holds."""
    counted: dict[str, int] = {}
    for worker in leases.values():
        counted[worker] = counted.get(worker, 0) + 1
    return counted


def served_by(ledger_url: str, workers: Iterable[str], total: int) -> bool:
    """Every one of the `total` served orgs is leased, and only to these workers."""
    leases = live_leases(ledger_url)
    return len(leases) == total and set(leases.values()) <= set(workers)


def balanced(ledger_url: str, workers: Sequence[str], total: int) -> bool:
    """Served by these workers only, each holding one org at least and none above its fair share."""
    leases = live_leases(ledger_url)
    share = math.ceil(total / len(workers))
    counted = loads(leases)
    return (
        len(leases) == total
        and set(counted) == set(workers)
        and all(1 <= n <= share for n in counted.values())
    )


def working(daemon: DaemonProcess, timeout: float = 60) -> dict[str, Any]:
    """Wait until the worker serves orgs and its push counter grows (it is pushing now); its status then.
    Every fault of the scenario is injected right after this, so it lands on a working process."""
    first = admin_status(daemon)
    start = int(first["push"]["pushed"])

    def pushing() -> dict[str, Any] | None:
        status = admin_status(daemon)
        mine = status.get("worker") or {}
        return status if mine.get("orgs") and int(status["push"]["pushed"]) > start else None

    found: dict[str, Any] = wait_until(
        pushing, timeout=timeout, interval=0.2, what=f"{daemon.log_path.name} to push"
    )
    return found


def seconds_until(predicate: Callable[[], Any], since: float, timeout: float, what: str) -> float:
    """Wait for `predicate`; the seconds from `since` (a monotonic time) to when it was first seen true."""
    wait_until(predicate, timeout=timeout, interval=0.2, what=what)
    return time.monotonic() - since


def log_events(daemon: DaemonProcess, event: str) -> list[dict[str, Any]]:
    """This daemon's log lines of one event (every run of it)."""
    return [line for line in daemon.log_lines() if line.get("event") == event]


# ------------------------------------------------------------------------------------ continuous bookings


@dataclass
class Booker:
    """Books round robin over the orgs' links from its own thread and connection, until stopped."""

    dsn: str
    targets: list[tuple[str, str]]  # (link id, related record id), one per org
    interval: float = 0.25
    booked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin booking in the background."""
        self._thread = threading.Thread(target=self._run, name="booker", daemon=True)
        self._thread.start()

    def stop(self) -> list[str]:
        """Stop booking; every booking id made."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        assert not self.errors, f"the booker failed: {self.errors[:3]}"
        return list(self.booked)

    def _run(self) -> None:
        scheduler = Scheduler(self.dsn)
        try:
            n = 0
            while not self._stop.is_set():
                link, related = self.targets[n % len(self.targets)]
                start = (datetime.now(UTC) + timedelta(days=2, minutes=n)).replace(microsecond=0)
                self.booked.append(scheduler.add_booking(link, start=start, related=related))
                n += 1
                self._stop.wait(self.interval)
        except Exception as exc:  # reported by stop()
            self.errors.append(repr(exc))
        finally:
            scheduler.close()


def booking_targets(world: TenantWorld, default_link: str, default_contact: str) -> list[tuple[str, str]]:
    """One link per customer org (owned by its first user, its first Contact as related record), and the
    default org's."""
    targets = [(world.add_link(org, title=f"{org.name} call"), org.contacts[0]) for org in world.orgs]
    return [*targets, (default_link, default_contact)]


# ------------------------------------------------------------------------------ writers' windows per org


@dataclass(frozen=True)
class Window:
    """The first and last write one access token made in one org (by the emulator's clock)."""

    token: str
    first: datetime
    last: datetime
    writes: int

    def overlaps(self, other: Window) -> bool:
        """Both tokens wrote within one stretch of time."""
        return self.first <= other.last and other.first <= self.last


def windows(requests: Iterable[Mapping[str, Any]]) -> list[Window]:
    """Each token's window over the org's write requests (REST writes; streaming and reads left out)."""
    spans: dict[str, list[datetime]] = {}
    for r in requests:
        if r.get("token") and r["method"] in WRITES and str(r["path"]).startswith(DATA_PREFIX):
            spans.setdefault(str(r["token"]), []).append(datetime.fromisoformat(str(r["at"])))
    return sorted(
        (Window(token, min(ats), max(ats), len(ats)) for token, ats in spans.items()), key=lambda w: w.first
    )


def overlapping(found: Sequence[Window]) -> list[tuple[Window, Window]]:
    """Every pair of windows of one org that overlap."""
    return [(a, b) for i, a in enumerate(found) for b in found[i + 1 :] if a.overlaps(b)]


def org_requests(world: TenantWorld, since: datetime) -> dict[str, list[dict[str, Any]]]:
    """Every org's logged API requests since `since`: each customer org's and the default org's (the main
    emulator org)."""
    query = "?since=" + since.isoformat().replace("+", "%2B")
    _, main = http_json("GET", f"{world.emulator.url}/__emulator/requests{query}", timeout=30)
    found = {DEFAULT_ORG: list(main["requests"])}
    for org in world.orgs:
        found[org.org_id] = org.client.requests(since)
    return found
