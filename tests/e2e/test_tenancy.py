"""End to end, many orgs (CONTRACT §9): twenty customer orgs and the default org served by one daemon from one
change stream; each booking's Event in its own org and in no other, and one org's trouble never stops another.

Every scenario judges the orgs with the cross-org verdict (bridge/devtools/tenants.py) before any repair.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.devtools.stack import wait_until
from bridge.devtools.tenants import BOOKING_FIELD, TenantOrg, TenantWorld

from .tenancy_support import (
    TenancyStack,
    activities,
    assert_clean,
    assert_ledger_orgs,
    assert_tenancy_logs_clean,
    default_org_link,
    events_of,
    make_tenancy_stack,
    org_rows,
    orgs_command,
    reconcile_org,
    stopped,
    wait_settled,
    wait_state,
)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def tenancy(tmp_path: Path, scheduler_dsn: str) -> Iterator[TenancyStack]:
    """Twenty connected customer orgs and the default org, their users, Contacts and Leads."""
    with make_tenancy_stack(tmp_path, scheduler_dsn) as built:
        yield built


@pytest.fixture
def few_orgs(tmp_path: Path, scheduler_dsn: str) -> Iterator[TenancyStack]:
    """Three connected customer orgs and the default org (for the scenarios that need no crowd)."""
    with make_tenancy_stack(tmp_path, scheduler_dsn, orgs=3) as built:
        yield built


def _book_each(world: TenantWorld, links: dict[str, str], orgs: list[TenantOrg]) -> dict[str, str]:
    """One booking on each org's link; returns booking id by org id."""
    return {org.org_id: world.book(org, links[org.org_id]) for org in orgs}


def _links(world: TenantWorld) -> dict[str, str]:
    """One one-on-one link per customer org, by org id."""
    return {org.org_id: world.add_link(org, title=f"{org.name} call") for org in world.orgs}


def _synced(stack: TenancyStack, bookings: list[str]) -> list[str]:
    """Those of the bookings not synced in the ledger (empty when all are)."""
    acts = activities(stack.ledger_url)
    return [b for b in bookings if acts.get(b, {}).get("state") != "synced"]


def test_every_field_of_every_event_lands_in_its_own_org_and_in_no_other(tenancy: TenancyStack) -> None:
    """Bookings of every link type (Contact, Lead, Account) in twenty orgs and the default org: one Event per
    booking with every field right, in its own org only; each org's tokens are only ever sent to that org; a
    dry-run reconciliation afterwards (every org, and one org) finds nothing."""
    world = tenancy.world
    default = default_org_link(world)
    before = [b for org in world.orgs[::2] for b in world.book_every_kind(org)]
    daemon = tenancy.daemon()
    daemon.start()
    try:
        daemon.wait_active()
        after = [b for org in world.orgs[1::2] for b in world.book_every_kind(org)]
        after.append(world.scheduler.add_booking(default.link, related=default.contact))
        booked = before + after
        wait_settled(tenancy, booked, what="every org's bookings to settle")
        assert _synced(tenancy, booked) == []
        assert_clean(world.verdict())
        assert_ledger_orgs(tenancy)
        per_org = [len(events_of(org, booked)) for org in world.orgs]
        assert per_org == [4] * len(world.orgs), "four bookings per org, each Event in its own org"
        seen: dict[str, str] = {}
        logs = [("default", world.emulator.requests())] + [(o.name, o.client.requests()) for o in world.orgs]
        for name, requests in logs:
            for fingerprint in {r["token"] for r in requests if r["token"]}:
                assert seen.setdefault(fingerprint, name) == name, (
                    f"a token of {seen[fingerprint]} reached {name}"
                )
        assert len(set(seen.values())) == len(logs), "every org was called with a token of its own"
        served = org_rows(tenancy.ledger_url)
        assert {org.org_id for org in world.orgs} <= set(served)
        assert all(served[org.org_id]["state"] == "active" for org in world.orgs)
        assert {served[org.org_id]["salesforce_org_id"][:15] for org in world.orgs} == {
            org.salesforce_org_id[:15] for org in world.orgs
        }
        dry = daemon.reconcile(dry_run=True)
        assert dry["total"] == 0, dry["items"][:5]
        one = reconcile_org(daemon, world.orgs[0])
        assert one["total"] == 0, one["items"][:5]
    finally:
        code = stopped(daemon)
    assert code == 0, "the daemon drains and exits 0 on SIGTERM"
    assert_tenancy_logs_clean(daemon, world)
    # The oracle sees a misplaced record in these very orgs: a copy of org 0's first Event put into org 1.
    event = events_of(world.orgs[0], before[:1])[0]
    copied = {k: event[k] for k in ("Subject", "StartDateTime", "EndDateTime", BOOKING_FIELD)}
    world.orgs[1].client.create("Event", copied)
    planted = world.verdict()
    assert (planted.cross_org, planted.lost, planted.doubled, planted.orphans) == (1, 0, 0, 0)


def test_an_org_connected_and_one_disconnected_mid_stream(tenancy: TenancyStack) -> None:
    """An org disconnected while the daemon runs keeps its new bookings waiting (state 'disconnected') while
    the others go on, and sends them once connected again; an org created disconnected waits the same way; an
    org added while the daemon runs is served without a restart."""
    world = tenancy.world
    late = world.add_org("Late customer", connected=False)
    links = _links(world)
    leaving = world.orgs[0]
    daemon = tenancy.daemon()
    daemon.start()
    try:
        daemon.wait_active()
        first = _book_each(world, links, world.orgs)
        wait_settled(tenancy, [b for o, b in first.items() if o != late.org_id])
        assert wait_state(tenancy, late, "disconnected")
        assert events_of(late, [first[late.org_id]]) == []

        world.set_connected(leaving, False)
        wait_state(tenancy, leaving, "disconnected")
        waiting = [world.book(leaving, links[leaving.org_id]) for _ in range(2)]
        others = _book_each(world, links, world.orgs[1:-1])
        wait_settled(tenancy, list(others.values()), what="the connected orgs' bookings")
        assert _synced(tenancy, list(others.values())) == []
        assert {activities(tenancy.ledger_url)[b]["state"] for b in waiting} == {"pending"}
        assert events_of(leaving, waiting) == []

        newcomer = world.add_org("Newcomer")
        fresh = world.book(newcomer, world.add_link(newcomer, title="Newcomer call"))
        wait_settled(tenancy, [fresh], what="the newcomer's booking")
        assert wait_state(tenancy, newcomer, "active")

        world.set_connected(late, True)
        world.set_connected(leaving, True)
        wait_settled(tenancy, [first[late.org_id], *waiting], what="the reconnected orgs' bookings")
        assert wait_state(tenancy, leaving, "active") and wait_state(tenancy, late, "active")
        assert len(events_of(leaving, waiting)) == 2 and len(events_of(late, [first[late.org_id]])) == 1
        assert_clean(world.verdict())
        assert_ledger_orgs(tenancy)
    finally:
        code = stopped(daemon)
    assert code == 0, "the daemon drains and exits 0 on SIGTERM"
    assert_tenancy_logs_clean(daemon, world)


def test_a_deactivated_integration_user_pauses_its_org_only_and_reactivation_resumes_it(
    tenancy: TenancyStack,
) -> None:
    """Deactivating one org's integration user pauses that org with a reason naming the refused token while
    the other orgs' bookings go out; reactivating it resumes the org by itself and nothing is lost."""
    world = tenancy.world
    links = _links(world)
    victim = world.orgs[3]
    daemon = tenancy.daemon()
    daemon.start()
    try:
        daemon.wait_active()
        first = _book_each(world, links, world.orgs)
        wait_settled(tenancy, list(first.values()))
        world.set_integration_user_active(victim, False)
        held = world.book(victim, links[victim.org_id])
        row = wait_state(tenancy, victim, "paused")
        assert "token" in (row["reason"] or ""), row["reason"]
        others = _book_each(world, links, [o for o in world.orgs if o is not victim])
        wait_settled(tenancy, list(others.values()), what="the other orgs' bookings")
        assert _synced(tenancy, list(others.values())) == []
        assert activities(tenancy.ledger_url)[held]["state"] == "pending"
        assert orgs_command(daemon)[victim.org_id]["pending"] == 1, "the orgs command counts the waiting row"

        world.set_integration_user_active(victim, True)
        wait_settled(tenancy, [held], what="the paused org's booking after reactivation")
        assert wait_state(tenancy, victim, "active")
        assert _synced(tenancy, [held]) == []
        assert_clean(world.verdict())
        assert_ledger_orgs(tenancy)
    finally:
        code = stopped(daemon)
    assert code == 0, "the daemon drains and exits 0 on SIGTERM"
    paused = [
        e for e in daemon.log_lines() if e.get("org") == victim.org_id and "pause" in str(e.get("event"))
    ]
    assert paused, "the pause is logged with the org's id"
    assert_tenancy_logs_clean(daemon, world)


def test_an_exhausted_api_allocation_pauses_its_org_only(tenancy: TenancyStack) -> None:
    """One org's daily API allocation used up: that org is paused with the reason and its booking waits, the
    others go on; given its allocation back, the org's booking goes out."""
    world = tenancy.world
    links = _links(world)
    spent = world.orgs[7]
    daemon = tenancy.daemon()
    daemon.start()
    try:
        daemon.wait_active()
        wait_settled(tenancy, list(_book_each(world, links, world.orgs).values()))
        world.set_allocation(spent, exhausted=True)
        held = world.book(spent, links[spent.org_id])
        row = wait_state(tenancy, spent, "paused")
        assert "allocation" in (row["reason"] or ""), row["reason"]
        refused = [r for r in spent.client.requests() if r["status"] == 403]
        assert refused, "the exhausted allocation was hit (403 REQUEST_LIMIT_EXCEEDED)"
        others = _book_each(world, links, [o for o in world.orgs if o is not spent])
        wait_settled(tenancy, list(others.values()), what="the other orgs' bookings")
        assert _synced(tenancy, list(others.values())) == []
        assert activities(tenancy.ledger_url)[held]["state"] == "pending"
        assert events_of(spent, [held]) == []

        world.set_allocation(spent, exhausted=False)
        wait_settled(tenancy, [held], what="the held booking once the allocation is back")
        assert wait_state(tenancy, spent, "active")
        assert_clean(world.verdict())
        assert_ledger_orgs(tenancy)
    finally:
        code = stopped(daemon)
    assert code == 0, "the daemon drains and exits 0 on SIGTERM"
    assert_tenancy_logs_clean(daemon, world)


def test_a_booking_assigned_to_another_orgs_user_fails_and_writes_nothing(tenancy: TenancyStack) -> None:
    """A round-robin booking whose assigned user belongs to another org fails with CROSS_ORG_USER, and one
    whose related record is another org's Contact fails too; neither writes an Event in any org, and the org's
    other bookings go out."""
    world = tenancy.world
    home, other = world.orgs[0], world.orgs[1]
    rr = world.add_link(home, "round_robin", title="Home demo")
    daemon = tenancy.daemon()
    daemon.start()
    try:
        daemon.wait_active()
        good = world.book(home, rr, assigned=home.users[1])
        stray = world.book(home, rr, assigned=other.users[1])
        foreign = world.book(home, rr, assigned=home.users[2], related=other.contacts[0])
        wait_settled(tenancy, [good, stray, foreign])
        acts = activities(tenancy.ledger_url)
        assert (acts[stray]["state"], acts[stray]["error_code"]) == ("failed", "CROSS_ORG_USER"), acts[stray]
        assert acts[stray]["last_error"], "the failed row says why"
        assert acts[foreign]["state"] == "failed" and acts[foreign]["last_error"], acts[foreign]
        assert _synced(tenancy, [good]) == []
        everywhere = [world.emulator.records("Event")] + [o.client.records("Event") for o in world.orgs]
        written = [e for events in everywhere for e in events if e.get(BOOKING_FIELD) in (stray, foreign)]
        assert written == [], "a failed cross-org booking wrote an Event"
        assert orgs_command(daemon)[home.org_id]["failed"] == 2
        assert_clean(world.verdict(failed_ok=frozenset({stray, foreign})))
        assert_ledger_orgs(tenancy)
    finally:
        code = stopped(daemon)
    assert code == 0, "the daemon drains and exits 0 on SIGTERM"
    assert_tenancy_logs_clean(daemon, world)


def test_a_new_integration_user_takes_effect_without_a_restart(few_orgs: TenancyStack) -> None:
    """Changing an org's integration user in its connection row makes the running daemon write that org's
    next Events as the new user (a token for it), while the org's earlier Events stay as they were."""
    world = few_orgs.world
    org = world.orgs[1]
    link = world.add_link(org)
    daemon = few_orgs.daemon()
    daemon.start()
    try:
        daemon.wait_active()
        before = world.book(org, link)
        wait_settled(few_orgs, [before])
        old_user, new_user = org.integration_user_id, org.salesforce_users[-1]
        switched_at = datetime.now(UTC)
        world.set_integration_user(org, new_user)
        wait_until(
            lambda: [r for r in org.client.requests(switched_at) if r["path"] == "/services/oauth2/token"],
            what="a token for the new integration user",
        )
        later = [world.book(org, link, related=org.contacts[1]) for _ in range(2)]
        wait_settled(few_orgs, later, what="the bookings after the switch")
        creators = {e[BOOKING_FIELD]: e["CreatedById"] for e in events_of(org, [before, *later])}
        assert creators == {before: old_user, later[0]: new_user, later[1]: new_user}, creators
        assert wait_state(few_orgs, org, "active")["username"] == org.integration_username
        assert_clean(world.verdict())
    finally:
        code = stopped(daemon)
    assert code == 0, "the daemon drains and exits 0 on SIGTERM"
    assert_tenancy_logs_clean(daemon, world)


def test_a_booking_committed_just_after_a_disconnect_is_not_written(few_orgs: TenancyStack) -> None:
    """A booking committed right after its org's connection is set to disconnected (both in one batch of the
    change stream) is not written by the org's draining runtime: it waits, pending, the org disconnected."""
    world = few_orgs.world
    org = world.orgs[2]
    link = world.add_link(org)
    daemon = few_orgs.daemon()
    daemon.start()
    try:
        daemon.wait_active()
        wait_settled(few_orgs, [world.book(org, link)])
        world.set_connected(org, False)
        after = world.book(org, link, related=org.contacts[1])
        wait_state(few_orgs, org, "disconnected")
        wait_until(lambda: after in activities(few_orgs.ledger_url), what="the booking in the ledger")
        time.sleep(2)  # the drained runtime's pusher would have written it by now
        assert events_of(org, [after]) == []
        assert activities(few_orgs.ledger_url)[after]["state"] == "pending"
    finally:
        code = stopped(daemon)
    assert code == 0, "the daemon drains and exits 0 on SIGTERM"


def test_an_org_stays_paused_while_its_integration_user_is_deactivated(few_orgs: TenancyStack) -> None:
    """While the integration user stays deactivated, every look at the org over several resume checks shows it
    paused with the token reason, and the orgs command shows it paused with its booking pending."""
    world = few_orgs.world
    victim = world.orgs[0]
    link = world.add_link(victim)
    daemon = few_orgs.daemon()
    daemon.start()
    try:
        daemon.wait_active()
        wait_settled(few_orgs, [world.book(victim, link)])
        world.set_integration_user_active(victim, False)
        held = world.book(victim, link)
        wait_state(few_orgs, victim, "paused")
        looks = []
        for _ in range(24):  # six seconds: six of the config's resume checks
            row = org_rows(few_orgs.ledger_url)[victim.org_id]
            looks.append((row["state"], "token" in (row["reason"] or "")))
            time.sleep(0.25)
        assert set(looks) == {("paused", True)}, looks
        listed = orgs_command(daemon)[victim.org_id]
        assert (listed["state"], listed["pending"]) == ("paused", 1), listed
        assert activities(few_orgs.ledger_url)[held]["state"] == "pending"
    finally:
        code = stopped(daemon)
    assert code == 0, "the daemon drains and exits 0 on SIGTERM"
