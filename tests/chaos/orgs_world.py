"""The many-org chaos world: twenty customer orgs and the default org in one emulator, traffic across all of
them, a saboteur that breaks some orgs only, and kills judged across every org (orgs_verdict.py judges the
outcome)."""

from __future__ import annotations

import contextlib
import random
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2

from bridge.devtools.stack import (
    EmulatorProcess,
    Scheduler,
    http_json,
)
from bridge.devtools.tenants import TenantOrg, TenantWorld
from bridge.records.ledger import DEFAULT_ORG
from bridge.source.setup import drop_slot
from tests.e2e.inbound_support import short_poll_org
from tests.e2e.tenancy_support import ORGS, TenancyStack, org_rows

from .traffic import Traffic
from .verdict import FAULT_BUDGET, Kills, rows_in_flight

KINDS = ("one_on_one", "round_robin", "rsvp")


@contextlib.contextmanager
def chaos_orgs_stack(
    tmp_path: Path, scheduler_dsn: str, *, pubsub: bool, orgs: int = ORGS
) -> Iterator[TenancyStack]:
    """A scheduler database and an emulator (2-second long polls, a delivery allocation that restarts' replays
    cannot use up; hosted orgs share those streaming settings; the Pub/Sub API of every org when `pubsub`)
    hosting `orgs` connected customer orgs."""
    org_file = short_poll_org(tmp_path, {"daily_delivered_events": "10000000"})
    emulator = EmulatorProcess(tmp_path, org_file=org_file, pubsub=pubsub)
    scheduler = Scheduler(scheduler_dsn)
    slot = "mb_" + scheduler_dsn.rsplit("/", 1)[1]
    stack: TenancyStack | None = None
    try:
        world = TenantWorld(emulator, scheduler, tmp_path)
        for n in range(orgs):
            world.add_org(f"Customer {n:02d}")
        stack = TenancyStack(tmp_path, scheduler_dsn, f"sqlite:///{tmp_path / 'ledger.sqlite3'}", slot, world)
        yield stack
    finally:
        for daemon in stack.daemons if stack else []:
            if daemon.alive():
                daemon.kill9()
        scheduler.close()
        emulator.stop()
        drop_slot(scheduler_dsn, slot)


@dataclass
class Lane:
    """One org's share of the traffic: its links (id, type), round-robin members, related records and
    bookings."""

    org: str  # the bridge's org id (DEFAULT_ORG for the default org)
    links: list[tuple[str, str]]
    members: list[str]
    related: list[str]
    bookings: list[str] = field(default_factory=list)


def customer_lane(world: TenantWorld, org: TenantOrg) -> Lane:
    """Three links of the org (one per type) owned by its first user; its other users take round robins."""
    links = [(world.add_link(org, kind, title=f"{org.name} {kind}"), kind) for kind in KINDS]
    return Lane(org.org_id, links, org.users[1:], org.contacts + org.leads + org.accounts)


def default_lane(world: TenantWorld) -> Lane:
    """Three links of a scheduler user without organization (the default org), two members and two
    Contacts of the main emulator org."""
    ids = {u["Username"]: u["Id"] for u in world.emulator.records("User")}
    owner = world.add_user(None, ids["owner1@example.com"])
    members = [world.add_user(None, ids[name]) for name in ("owner1@example.com", "owner2@example.com")]
    links = [
        (world.scheduler.add_link(kind, owner, title=f"Default {kind}", description="Default agenda"), kind)
        for kind in KINDS
    ]
    contacts = [world.emulator.create("Contact", {"LastName": f"Default{i}"}) for i in range(2)]
    return Lane(DEFAULT_ORG, links, members, contacts)


class OrgTraffic(Traffic):
    """The single-org traffic's mix (creates, reschedules, cancels, round-robin reassignments, link edits),
    each operation in the next org's lane in turn, with that org's own users and related records only."""

    def __init__(
        self, dsn: str, lanes: list[Lane], operations: int, seed: int, pace: float, until: threading.Event
    ) -> None:
        links = [link for lane in lanes for link in lane.links]
        super().__init__(dsn, links, [], [], operations, seed, pace=pace, until=until)
        self.lanes = lanes

    def _one(self, cur: psycopg2.extensions.cursor, i: int) -> str:
        lane = self.lanes[i % len(self.lanes)]
        roll = self.rng.random()
        if roll < 0.70 or len(lane.bookings) < 3:
            link, kind = lane.links[(i // len(self.lanes)) % len(lane.links)]
            bid = str(uuid.uuid4())
            start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1 + i % 20, minutes=i)
            assignee = self.rng.choice(lane.members) if kind == "round_robin" else None
            cur.execute(
                "INSERT INTO scheduler.bookings (id, link_id, assigned_user_id, start_at, end_at, status, "
                "invitee_name, related_record_id) VALUES (%s,%s,%s,%s,%s,'scheduled','Guest',%s)",
                (bid, link, assignee, start, start + timedelta(minutes=30), self.rng.choice(lane.related)),
            )
            lane.bookings.append(bid)
            self.bookings.append(bid)
            return "create"
        return self._change(cur, lane, roll, i)

    def _change(self, cur: psycopg2.extensions.cursor, lane: Lane, roll: float, i: int) -> str:
        target = self.rng.choice(lane.bookings)
        if roll < 0.82:
            cur.execute(
                "UPDATE scheduler.bookings SET start_at = start_at + interval '1 hour', "
                "end_at = end_at + interval '1 hour' WHERE id = %s",
                (target,),
            )
            return "reschedule"
        if roll < 0.89:
            cur.execute("UPDATE scheduler.bookings SET status = 'cancelled' WHERE id = %s", (target,))
            return "cancel"
        if roll < 0.96:
            cur.execute(
                "UPDATE scheduler.bookings SET assigned_user_id = %s WHERE id = %s "
                "AND assigned_user_id IS NOT NULL",
                (self.rng.choice(lane.members), target),
            )
            return "reassign"
        link, _ = self.rng.choice(lane.links)
        cur.execute("UPDATE scheduler.scheduling_links SET title = %s WHERE id = %s", (f"Edited {i}", link))
        return "link_edit"


# Seconds a control call may take: the one emulator serves twenty orgs on a shared, busy machine.
CONTROL_TIMEOUT = 60.0


def control(url: str, method: str, path: str, body: Any = None) -> Any:
    """One call of an org's control API (`url` the org's), patient with a busy emulator."""
    return http_json(method, f"{url}/__emulator/{path}", body, timeout=CONTROL_TIMEOUT)[1]


def org_stats(url: str) -> dict[str, Any]:
    """One org's request counters (its control API)."""
    return control(url, "GET", "stats")  # type: ignore[no-any-return]


def bridge_requests(stack: TenancyStack) -> int:
    """The bridge's requests to every org so far: counted REST calls but single-record PATCHes (the world's
    own admin edits), plus the requests a fault rule answered."""
    total = 0
    for url in [stack.world.emulator.url, *(o.url for o in stack.world.orgs)]:
        stats = org_stats(url)
        by_route = stats["api_requests"]["by_route"]
        total += sum(int(n) for route, n in by_route.items() if not route.startswith("PATCH /sobjects/"))
        total += int(stats["faults_fired"])
    return total


class OrgSaboteur(threading.Thread):
    """Every half second, one act on one of its target orgs (no other org is touched): a live session
    expired, the CometD clients forgotten or the Pub/Sub streams cut, the API allocation used up, the
    integration user deactivated.
    `hits` counts the acts that hit: sessions or clients that existed, an exhausted allocation that refused
    the daemon a call (a 403 in that org's request log), a deactivation that paused the org in the ledger.
    Every act undoes itself before the next (allocation freed, user reactivated)."""

    def __init__(self, stack: TenancyStack, targets: dict[str, list[TenantOrg]], seed: int) -> None:
        super().__init__(daemon=True)
        self.stack, self.targets, self.rng = stack, targets, random.Random(seed)
        self.stop = threading.Event()
        self.hits = dict.fromkeys(targets, 0)
        self.acts: dict[str, Callable[[TenantOrg], bool]] = {
            "sessions_expired": lambda o: control(o.url, "POST", "sessions/expire", {})["expired"] > 0,
            "clients_forgotten": lambda o: (
                control(o.url, "POST", "streaming/forget-clients", {})["forgotten"] > 0
            ),
            "streams_cut": lambda o: control(o.url, "POST", "pubsub/cut", {})["cut"] > 0,
            "allocation_exhausted": self._exhaust_the_allocation,
            "user_deactivated": self._deactivate_the_user,
        }
        self.error: BaseException | None = None

    def run(self) -> None:
        """Act until stopped; an unexpected error is kept for the test thread."""
        try:
            while not self.stop.wait(0.5):
                act = self.rng.choice(sorted(self.targets))
                org = self.rng.choice(self.targets[act])
                self.hits[act] += self.acts[act](org)
        except BaseException as exc:  # reported to the test thread
            self.error = exc

    def _exhaust_the_allocation(self, org: TenantOrg) -> bool:
        """Use up the org's day of API calls for one to three seconds, until a call of the daemon's is
        refused."""
        since = datetime.now(UTC)
        control(org.url, "POST", "limits", {"allocation": 15000, "used": 15000})
        try:
            return bool(wait_for(lambda: _refused(org, since), 1.0, 3.0))
        finally:
            control(org.url, "POST", "limits", {"used": 0})

    def _deactivate_the_user(self, org: TenantOrg) -> bool:
        """Deactivate the org's integration user until the daemon pauses the org (10 s at most), then
        reactivate it."""
        user = {"username": org.integration_username}
        control(org.url, "POST", "users/active", {**user, "active": False})
        try:
            return bool(wait_for(lambda: _state(self.stack, org) == "paused", 0.5, 10.0))
        finally:
            control(org.url, "POST", "users/active", {**user, "active": True})


def wait_for(condition: Callable[[], bool], least: float, most: float) -> bool:
    """Sleep `least` seconds, then poll `condition` until true or `most` seconds in all; its last value."""
    deadline = time.monotonic() + most
    time.sleep(least)
    while not (met := condition()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return met


def _refused(org: TenantOrg, since: datetime) -> bool:
    """True when the org answered a request 403 (REQUEST_LIMIT_EXCEEDED) since then."""
    query = urllib.parse.urlencode({"since": since.isoformat()})
    return any(r["status"] == 403 for r in control(org.url, "GET", f"requests?{query}")["requests"])


def _state(stack: TenancyStack, org: TenantOrg) -> str | None:
    """The org's state in the ledger's `orgs` table (None before the daemon wrote it)."""
    row = org_rows(stack.ledger_url).get(org.org_id)
    return None if row is None else str(row["state"])


def install_org_faults(org: TenantOrg, rules: list[dict[str, Any]]) -> None:
    """Add each fault rule to that org only, with a `times` budget it cannot use up (so hits are counted)."""
    for rule in rules:
        control(org.url, "POST", "faults", {**rule, "times": FAULT_BUDGET})


def org_fault_hits(org: TenantOrg) -> dict[str, int]:
    """Hits per fault rule of the org, keyed by the org's name and what the rule does."""
    hits: dict[str, int] = {}
    for rule in control(org.url, "GET", "faults")["rules"]:
        what = rule["action"] if rule["action"] == "drop" else rule["error_code"] or f"{rule['latency_ms']}ms"
        hits[f"{org.name} {rule['path']} {what}"] = FAULT_BUDGET - int(rule["times"])
    return hits


def clear_org_faults(org: TenantOrg) -> None:
    """Remove every fault rule of the org."""
    control(org.url, "DELETE", "faults")


def org_kills(stack: TenancyStack) -> Kills:
    """Kills of a daemon serving every org of the world: requests to any org, rows of any org in flight."""
    return Kills(
        requests=lambda: bridge_requests(stack),
        in_flight=lambda: rows_in_flight(stack.ledger_url, len(stack.world.scheduler.rows("bookings"))),
    )
