"""The many-org chaos verdict, before any repair: the cross-org verdict of bridge/devtools/tenants.py (lost,
doubled, wrong fields, cross-org, orphans in any org), the ledger's agreement with each org, and what the
daemon's own reconciliations repaired meanwhile (a race with live traffic, or unexplained)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from bridge.devtools.invariants import check
from bridge.devtools.stack import (
    DaemonProcess,
    HttpError,
    http_json,
    ledger_activities,
    ledger_connection,
    wait_until,
)
from bridge.records.ledger import DEFAULT_ORG
from tests.e2e.tenancy_support import TenancyStack

from .verdict import AGREE_SECONDS


def ledger_disagreements(stack: TenancyStack) -> tuple[int, int]:
    """(bookings whose ledger row is not synced with their org's one Event, activities in the wrong org):
    each org's bookings checked against that org's records and the ledger's rows of them."""
    s = stack.world.scheduler
    bookings, users = s.rows("bookings"), {r["id"]: r for r in s.rows("users")}
    links = {r["id"]: r for r in s.rows("scheduling_links")}
    owner_org = {k: users[v["owner_id"]]["organization_id"] for k, v in links.items()}
    acts = ledger_activities(stack.ledger_url)
    wrong_org = sum(
        1 for b in bookings if b["id"] in acts and acts[b["id"]]["org_id"] != owner_org[b["link_id"]]
    )
    mismatched = 0
    for held in stack.world.org_records():
        own = [b for b in bookings if str(owner_org[b["link_id"]] or DEFAULT_ORG) == held.org]
        found = check(
            bookings=own,
            links=links,
            users=users,
            events=[e for e in held.events if e.get("Scheduling_Booking_Id__c") in {b["id"] for b in own}],
            mogli_events=held.mogli_events,
            ledger_activities={b["id"]: acts[b["id"]] for b in own if b["id"] in acts},
        )
        mismatched += sum(1 for d in found if d.kind == "ledger_mismatch")
    return mismatched, wrong_org


def orgs_verdict(stack: TenancyStack, timeout: float = 240) -> dict[str, Any]:
    """Judge every org, repairing nothing: every committed booking settled in the ledger, then the cross-org
    verdict (lost, doubled, wrong fields, cross-org, orphans) and the ledger's agreement with each org.
    Returns the counted figures (`differences`: the sum of `verdict_across_orgs`); AssertionError with the
    evidence when any is not zero."""
    world = stack.world
    # Counted in the database, not by the writer.
    bookings = len(world.scheduler.rows("bookings"))

    def settled() -> bool:
        stack.assert_running()
        acts = ledger_activities(stack.ledger_url)
        return len(acts) >= bookings and not any(a["state"] == "pending" for a in acts.values())

    def agree() -> bool:
        return settled() and world.verdict().clean and ledger_disagreements(stack) == (0, 0)

    agreed = True
    try:
        wait_until(settled, timeout=timeout, interval=1.0, what="every org's bookings to settle")
        wait_until(agree, timeout=AGREE_SECONDS, interval=1.0, what="every org and the ledger to agree")
    except AssertionError:
        agreed = False
    result = world.verdict()
    mismatched, wrong_org = ledger_disagreements(stack)
    across = {
        "wrong fields": result.wrong_fields,
        "cross-org": result.cross_org,
        "orphans": result.orphans,
        "ledger rows not synced with the Event": mismatched,
        "ledger rows in another org": wrong_org,
    }
    figures: dict[str, Any] = {
        "bookings": bookings,
        "lost": result.lost,
        "doubled": result.doubled,
        "differences": sum(across.values()),
        "verdict_across_orgs": across,
    }
    assert agreed and result.clean and not (mismatched or wrong_org), (
        f"the orgs, the scheduler and the ledger did not agree: {figures}; {result.differences[:8]}"
    )
    return figures


@dataclass
class OrgRepairs:
    """What the daemon's own (non-dry-run) reconciliations repaired in any org before the verdict."""

    total: int = 0
    raced: int = 0  # the booking or its link changed in the scheduler while the run read it
    unexplained: dict[str, int] = field(default_factory=dict)


def daemon_repairs_in_orgs(ledger_url: str) -> OrgRepairs:
    """Classify every repair of the daemon's reconciliations (every org): a race with live traffic when the
    stream journaled a scheduler change of its booking or link after the run started (the run compared a
    row that moved under it, and the stream queued that change itself); everything else is unexplained
    (it would have hidden what the pipeline lost)."""
    repairs_q = sa.text(
        "SELECT d.kind, d.booking_id, d.link_id, r.started_at FROM drift d "
        "JOIN reconciliation_runs r ON r.id = d.run_id WHERE r.dry_run = :dry AND d.repaired = :repaired"
    )
    streamed_q = sa.text(
        "SELECT count(*) FROM journal WHERE entity_key IN (:booking, :link) AND at >= :since "
        "AND action LIKE 'source.%' AND CAST(detail AS TEXT) NOT LIKE '%\"snapshot\": true%'"
    )
    found = OrgRepairs()
    with ledger_connection(ledger_url) as conn:
        for kind, booking, link, started in conn.execute(repairs_q, {"dry": False, "repaired": True}).all():
            found.total += 1
            keys = {"booking": booking or "", "link": link or "", "since": started}
            if conn.execute(streamed_q, keys).scalar_one() > 0:
                found.raced += 1
            else:
                found.unexplained[kind] = found.unexplained.get(kind, 0) + 1
    return found


@dataclass(frozen=True)
class DryRuns:
    """What one dry-run reconciliation per org found, through the running daemon's admin API."""

    runs: int
    drift: int
    by_kind: dict[str, int]
    bookings_checked: int


def dry_run_every_org(daemon: DaemonProcess, orgs: list[str], timeout: float = 300) -> DryRuns:
    """`POST /api/reconciliations {"dry_run": true, "orgs": [...]}` for `orgs` (the default org included
    by its id 'default'): one run per org on that org's runtime; waits until each has finished and sums
    what they found (a run without `orgs` reaches the default org alone)."""
    admin = tomllib.loads(daemon.config.read_text())["admin"]
    url, headers = (
        f"http://{admin['listen']}/api/reconciliations",
        {"Authorization": f"Bearer {admin['token']}"},
    )

    def start() -> Any:
        try:
            return http_json("POST", url, {"dry_run": True, "orgs": orgs}, headers=headers, timeout=60)[1]
        except HttpError as exc:  # 409: an org resumed in the ledger whose runtime is not up yet
            if exc.status != 409:
                raise
            return None

    started = wait_until(start, timeout=60, interval=1.0, what="every org's runtime to take a dry run")
    ids = [int(i) for i in started["ids"]]

    def finished() -> list[dict[str, Any]] | None:
        runs = [http_json("GET", f"{url}/{i}", headers=headers, timeout=60)[1] for i in ids]
        return runs if all(r["state"] != "running" for r in runs) else None

    runs: list[dict[str, Any]] = wait_until(finished, timeout=timeout, interval=1.0, what="the dry runs")
    assert all(r["state"] == "finished" and r["dry_run"] for r in runs), [r["state"] for r in runs]
    by_kind: dict[str, int] = {}
    for run in runs:
        for kind, n in run["drift"]["by_kind"].items():
            by_kind[kind] = by_kind.get(kind, 0) + int(n)
    return DryRuns(
        runs=len(runs),
        drift=sum(int(r["drift"]["found"]) for r in runs),
        by_kind=by_kind,
        bookings_checked=sum(int((r["summary"] or {}).get("bookings_checked", 0)) for r in runs),
    )
