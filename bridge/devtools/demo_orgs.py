"""The demo's customer orgs: three orgs in the emulator beside the default org, their bookings, the
integration user deactivated half-way, and the per-org figures the demo prints side by side (CONTRACT §9).

Every figure is counted from the records (the scheduler's rows, each org's Salesforce, the ledger); the
verdict is `bridge.devtools.tenants.verdict`, never a literal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from bridge.devtools.invariants import Difference, check
from bridge.devtools.stack import ledger_activities, ledger_connection
from bridge.devtools.tenants import OrgRecords, TenantOrg, TenantWorld, Verdict, org_of_links, verdict
from bridge.records.ledger import DEFAULT_ORG

CUSTOMERS = ("Acme Dental", "Globex Clinics", "Initech Tutors")
PAUSED = "Globex Clinics"  # the customer whose integration user is deactivated half-way
DEFAULT_NAME = "default org"
CLEAN = "clean: nothing lost, doubled or cross-org"  # what an org's verdict "clean" says


@dataclass
class Customer:
    """One customer org of the demo, its three links and the bookings made on them."""

    org: TenantOrg
    one: str
    rr: str
    rsvp: str


class CustomerOrgs:
    """The demo's three customer orgs: created, booked, paused and mended through the tenant world."""

    def __init__(self, world: TenantWorld) -> None:
        self.world = world
        self.customers: list[Customer] = []

    def create(self) -> None:
        """Each customer's org in the emulator (its own URL) and its organization, users and connection."""
        for name in CUSTOMERS:
            org = self.world.add_org(name)
            w = self.world
            self.customers.append(
                Customer(
                    org,
                    one=w.add_link(org, "one_on_one", title=f"{name}: intro call"),
                    rr=w.add_link(org, "round_robin", title=f"{name}: product demo"),
                    rsvp=w.add_link(org, "rsvp", title=f"{name}: open house"),
                )
            )

    @property
    def paused(self) -> Customer:
        """The customer whose integration user the demo deactivates."""
        return next(c for c in self.customers if c.org.name == PAUSED)

    def book_first(self) -> list[str]:
        """Every link kind in every customer org: a Contact, a Lead, an Account, two RSVP attendees."""
        day = (datetime.now(UTC) + timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
        hour = timedelta(hours=1)
        made: list[str] = []
        for c in self.customers:
            org, book = c.org, self.world.book
            made += [
                book(org, c.one, related=org.contacts[0], start=day),
                book(org, c.rr, related=org.leads[0], assigned=org.users[1], start=day + hour),
                book(org, c.rr, related=org.accounts[0], assigned=org.users[2], start=day + 2 * hour),
                book(org, c.rsvp, related=org.contacts[0], start=day + 4 * hour),
                book(org, c.rsvp, related=org.contacts[1], start=day + 4 * hour),
            ]
        return made

    def book_second(self) -> dict[str, list[str]]:
        """Half-way: a 1:1 and a round robin in every customer org; the bookings by org id."""
        day = (datetime.now(UTC) + timedelta(days=4)).replace(minute=0, second=0, microsecond=0)
        made: dict[str, list[str]] = {}
        for c in self.customers:
            org, book = c.org, self.world.book
            made[org.org_id] = [
                book(org, c.one, related=org.contacts[1], start=day),
                book(org, c.rr, related=org.leads[0], assigned=org.users[2], start=day + timedelta(hours=1)),
            ]
        return made

    def set_paused_user_active(self, active: bool) -> None:
        """Deactivate (or reactivate) the integration user of the customer the demo pauses."""
        self.world.set_integration_user_active(self.paused.org, active)

    def names(self) -> dict[str, str]:
        """Each org's display name by org id (the default org included)."""
        return {DEFAULT_ORG: DEFAULT_NAME, **{c.org.org_id: c.org.name for c in self.customers}}


# -- what the ledger says about the orgs


def org_rows(ledger_url: str) -> dict[str, dict[str, Any]]:
    """The ledger's `orgs` rows by org id ({} while the daemon has not written them)."""
    try:
        with ledger_connection(ledger_url) as conn:
            rows = conn.execute(sa.text("SELECT * FROM orgs")).mappings().all()
    except sa.exc.OperationalError:
        return {}
    return {str(r["org_id"]): dict(r) for r in rows}


def activity_states(ledger_url: str) -> dict[str, str]:
    """Every booking's ledger state by booking id ({} before the ledger's schema exists)."""
    try:
        acts = ledger_activities(ledger_url)
    except sa.exc.OperationalError:
        return {}
    return {b: str(a.get("state") or "") for b, a in acts.items()}


@dataclass(frozen=True, slots=True)
class PauseSnapshot:
    """One read of the ledger while an org is paused: its row, and the other orgs' bookings gone out."""

    state: str
    reason: str
    states: Mapping[str, str]  # every org's state in the same read
    waiting: int  # the paused org's bookings still pending
    others_synced: int  # the other orgs' half-way bookings synced
    others: int  # how many the other orgs booked half-way


def pause_snapshot(ledger_url: str, paused: str, half_way: Mapping[str, list[str]]) -> PauseSnapshot | None:
    """`snapshot` of the ledger as it is now."""
    return snapshot(org_rows(ledger_url), activity_states(ledger_url), paused, half_way)


def snapshot(
    rows: Mapping[str, Mapping[str, Any]],
    booking_states: Mapping[str, str],
    paused: str,
    half_way: Mapping[str, Sequence[str]],
) -> PauseSnapshot | None:
    """A snapshot when `paused` shows paused with its half-way bookings pending and every other org's
    half-way bookings are synced; None otherwise (`rows`: the `orgs` rows by org id)."""
    row = rows.get(paused)
    held = [booking_states.get(b, "") for b in half_way[paused]]
    others = [b for org, made in half_way.items() if org != paused for b in made]
    synced = sum(1 for b in others if booking_states.get(b) == "synced")
    if row is None or row["state"] != "paused" or set(held) != {"pending"} or synced < len(others):
        return None
    every = {org: str(r["state"]) for org, r in rows.items()}
    return PauseSnapshot(str(row["state"]), str(row["reason"] or ""), every, len(held), synced, len(others))


def resumed(ledger_url: str, org: str, bookings: Sequence[str]) -> bool:
    """The org is active again and these bookings of it are synced."""
    row = org_rows(ledger_url).get(org)
    done = activity_states(ledger_url)
    return row is not None and row["state"] == "active" and all(done.get(b) == "synced" for b in bookings)


# -- the per-org figures


@dataclass(frozen=True, slots=True)
class OrgFigures:
    """One org's row of the side-by-side table (every number counted, the verdict the tenants' verdict)."""

    org: str
    name: str
    state: str
    bookings: int  # made in the scheduler on this org's links
    cancelled: int
    events: int  # live Events in this org's Salesforce
    mogli_events: int
    ledger_differences: int  # scheduler, this org's Salesforce and the ledger disagreeing
    judged: Verdict

    @property
    def verdict_text(self) -> str:
        """The verdict in words."""
        j = self.judged
        if j.clean:
            return "clean"
        misplaced = j.cross_org + j.orphans
        return f"lost {j.lost}, doubled {j.doubled}, wrong {j.wrong_fields}, cross-org {misplaced}"


def figures(world: TenantWorld, names: Mapping[str, str], ledger_url: str) -> list[OrgFigures]:
    """`judge` what the scheduler, every org's Salesforce and the ledger hold now."""
    s = world.scheduler
    return judge(
        bookings=s.rows("bookings"),
        links={r["id"]: r for r in s.rows("scheduling_links")},
        users={r["id"]: r for r in s.rows("users")},
        held=world.org_records(),
        org_states={org: str(r["state"]) for org, r in org_rows(ledger_url).items()},
        acts=ledger_activities(ledger_url),
        names=names,
    )


def judge(
    *,
    bookings: Sequence[Mapping[str, Any]],
    links: Mapping[str, Mapping[str, Any]],
    users: Mapping[str, Mapping[str, Any]],
    held: Sequence[OrgRecords],
    org_states: Mapping[str, str],
    acts: Mapping[str, Mapping[str, Any]],
    names: Mapping[str, str],
) -> list[OrgFigures]:
    """Each org's figures in the order of `held`, judged by the cross-org verdict one org at a time."""
    link_org = org_of_links(links, users)
    out = []
    for records in held:
        own = [b for b in bookings if link_org[str(b["link_id"])] == records.org]
        own_links = {k: v for k, v in links.items() if link_org[k] == records.org}
        out.append(
            OrgFigures(
                org=records.org,
                name=names.get(records.org, records.org),
                state=org_states.get(records.org, ""),
                bookings=len(own),
                cancelled=sum(1 for b in own if b["status"] == "cancelled"),
                events=len(records.events),
                mogli_events=len(records.mogli_events),
                ledger_differences=len(_ledger_check(own, own_links, users, records, acts)),
                judged=verdict(bookings=bookings, links=links, users=users, orgs=[records]),
            )
        )
    return out


def _ledger_check(
    own: Sequence[Mapping[str, Any]],
    links: Mapping[str, Mapping[str, Any]],
    users: Mapping[str, Mapping[str, Any]],
    held: OrgRecords,
    acts: Mapping[str, Mapping[str, Any]],
) -> list[Difference]:
    """The invariant check of one org with the ledger: each booking's Event and its ledger row agree."""
    return check(
        bookings=own,
        links=links,
        users=users,
        events=held.events,
        mogli_events=held.mogli_events,
        ledger_activities=acts,
    )
