"""The `orgs` table's operations: the default org's row, state transitions and their journal, identity and
API use, and the figures by org (counts, positions)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Connection, delete

from bridge.ledger.repository import Ledger
from bridge.ledger.tables import ORGS
from bridge.records.ledger import DEFAULT_ORG, OrgState
from bridge.records.outbound import LinkOutcome, OutcomeState
from tests.adapters.ledger.factory import NOW
from tests.adapters.ledger.tenants import ORG_A, ORG_B, three_orgs

LATER = NOW + timedelta(minutes=5)


def _drop_default(connection: Connection) -> None:
    connection.execute(delete(ORGS).where(ORGS.c.org_id == DEFAULT_ORG))


async def test_migrated_ledger_has_the_default_org(repo: Ledger) -> None:
    """A ledger migrated to head holds the default org's row, active; it is listed first."""
    [default] = await repo.list_orgs()
    assert default.org_id == DEFAULT_ORG and default.state == OrgState.ACTIVE
    assert default.ledger_org is None
    await three_orgs(repo)
    assert [o.org_id for o in await repo.list_orgs()] == [DEFAULT_ORG, ORG_A, ORG_B]
    org_a = await repo.get_org(ORG_A)
    assert org_a is not None and org_a.name == "Org a"
    assert await repo.get_org("no-such-org") is None


async def test_state_changes_are_journaled_once(repo: Ledger) -> None:
    """set_org_state returns True and journals 'org.<state>' with the reason only when the state or reason
    changes; state_since moves with the state, not with a new reason."""
    await three_orgs(repo)
    assert await repo.set_org_state(ORG_A, OrgState.PAUSED, "integration user deactivated")
    assert not await repo.set_org_state(ORG_A, OrgState.PAUSED, "integration user deactivated")
    paused = await repo.get_org(ORG_A)
    assert paused is not None and paused.state == "paused" and paused.reason == "integration user deactivated"
    assert paused.state_since == NOW
    url = repo.engine.url.render_as_string(hide_password=False)
    later = Ledger.from_url(url, clock=lambda: LATER)  # the same ledger, a later clock
    assert await later.set_org_state(ORG_A, OrgState.PAUSED, "API allocation exhausted")
    reasoned = await repo.get_org(ORG_A)
    assert reasoned is not None and reasoned.state_since == NOW and reasoned.updated_at == LATER
    assert await later.set_org_state(ORG_A, OrgState.ACTIVE, None)
    active = await repo.get_org(ORG_A)
    assert active is not None and active.state == "active" and active.reason is None
    assert active.state_since == LATER
    later.dispose()
    entries = await repo.list_journal(entity="org", key=ORG_A)
    assert [(e.action, e.detail["reason"], e.org_id) for e in reversed(entries)] == [
        ("org.paused", "integration user deactivated", ORG_A),
        ("org.paused", "API allocation exhausted", ORG_A),
        ("org.active", None, ORG_A),
    ]
    assert [e.detail["from"] for e in reversed(entries)] == ["active", "paused", "paused"]
    other = await repo.get_org(ORG_B)
    assert other is not None and other.state == "active"


async def test_default_org_state_is_journaled_as_null_org(repo: Ledger) -> None:
    """The default org's entry has org_id NULL (as the default org everywhere but `orgs`), whatever the
    scope it was set through; an unknown org changes nothing."""
    assert await repo.scoped(ORG_A).set_org_state(DEFAULT_ORG, OrgState.PAUSED, "token refused")
    [entry] = await repo.list_journal(entity="org")
    assert entry.entity_key == DEFAULT_ORG and entry.org_id is None
    assert not await repo.set_org_state("no-such-org", OrgState.PAUSED, "x")
    assert await repo.get_org("no-such-org") is None


async def test_default_row_is_recreated_by_a_write(repo: Ledger) -> None:
    """A ledger without the default org's row gets it back with the first write that names it."""
    repo.call(_drop_default)
    assert await repo.get_org(DEFAULT_ORG) is None
    await repo.record_org_api(DEFAULT_ORG, 10, 15000)
    default = await repo.get_org(DEFAULT_ORG)
    assert (
        default is not None
        and default.state == "active"
        and (default.api_used, default.api_limit) == (10, 15000)
    )


async def test_identity_and_api_use(repo: Ledger) -> None:
    """record_org_identity stores the 00D id and instance URL; record_org_api the API use and limit."""
    await three_orgs(repo)
    await repo.record_org_identity(ORG_A, "00D000000000001AAA", "https://a.example.test")
    await repo.record_org_api(ORG_A, 120, 15000)
    await repo.record_org_api(ORG_A, 121, 15000)
    org = await repo.get_org(ORG_A)
    assert org is not None
    assert (org.salesforce_org_id, org.instance_url) == ("00D000000000001AAA", "https://a.example.test")
    assert (org.api_used, org.api_limit) == (121, 15000)
    other = await repo.get_org(ORG_B)
    assert other is not None and other.salesforce_org_id is None and other.api_used is None


async def test_org_counts(repo: Ledger) -> None:
    """org_counts: pending, failed and synced links plus activities per org, 'default' for NULL, and every
    `orgs` row even without rows."""
    assert {k: (c.pending, c.failed, c.synced) for k, c in (await repo.org_counts()).items()} == {
        DEFAULT_ORG: (0, 0, 0)
    }
    await three_orgs(repo)
    view_a, view_b = repo.scoped(ORG_A), repo.scoped(ORG_B)
    [work_a] = await view_a.claim_link_work(NOW, 10)
    await view_a.record_link_outcomes(
        [LinkOutcome("l-a", work_a.version, OutcomeState.SYNCED, mogli_event_id="a0BA")], NOW
    )
    [work_b] = await view_b.claim_link_work(NOW, 10)
    failed = LinkOutcome("l-b", work_b.version, OutcomeState.FAILED, error="no", error_code="X")
    await view_b.record_link_outcomes([failed], NOW)
    counts = await repo.org_counts()
    assert {k: (c.pending, c.failed, c.synced) for k, c in counts.items()} == {
        DEFAULT_ORG: (2, 0, 0),
        ORG_A: (1, 0, 1),
        ORG_B: (1, 1, 0),
    }


async def test_org_positions(repo: Ledger) -> None:
    """org_positions: each org's channel positions under bare channel names, 'default' for the default org;
    the global source position is not a channel of any org."""
    await repo.write_checkpoint("source", "123")
    assert await repo.org_positions() == {}
    await repo.scoped(None).write_checkpoint("/data/EventChangeEvent", "1")
    await repo.scoped(ORG_A).write_checkpoint("/data/EventChangeEvent", "2")
    await repo.scoped(ORG_A).write_checkpoint("/event/Mogli_Event__ChangeEvent", "3")
    assert await repo.org_positions() == {
        DEFAULT_ORG: {"/data/EventChangeEvent": "1"},
        ORG_A: {"/data/EventChangeEvent": "2", "/event/Mogli_Event__ChangeEvent": "3"},
    }
