"""Ingest with many orgs (CONTRACT §9): `orgs` rows, org_id of users, links, activities, journal."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, select, update

from bridge.ledger.repository import Ledger
from bridge.ledger.tables import ACTIVITIES, JOURNAL, LINKS, ORGS, USERS
from bridge.records.source import ChangeOp, ConnectionRow, OrganizationRow, SourceChange, SourceTable
from tests.adapters.ledger.factory import NOW, batch, booking, change, link, truncate, txn, user

ORG_A = "0a000000-0000-4000-8000-00000000000a"
ORG_B = "0b000000-0000-4000-8000-00000000000b"
LOGIN = "https://a.my.salesforce.com"
LATER = NOW + timedelta(minutes=5)


def org(org_id: str = ORG_A, name: str = "Acme", op: ChangeOp = ChangeOp.INSERT) -> SourceChange:
    """An organizations change."""
    return SourceChange(SourceTable.ORGANIZATIONS, op, OrganizationRow(id=org_id, name=name))


def conn(
    org_id: str = ORG_A,
    status: str | None = "connected",
    op: ChangeOp = ChangeOp.INSERT,
    **kw: Any,
) -> SourceChange:
    """A salesforce_connections change."""
    values: dict[str, Any] = {"login_url": LOGIN, "username": "integration@a.example", "status": status}
    values.update(kw)
    return SourceChange(SourceTable.CONNECTIONS, op, ConnectionRow(id=org_id, **values))


def rows(repo: Ledger, table: Any, key: str) -> dict[str, dict[str, Any]]:
    """Every row of a ledger table by key, read straight from the database."""

    def read(connection: Connection) -> dict[str, dict[str, Any]]:
        return {m[key]: dict(m) for m in connection.execute(select(table)).mappings()}

    return repo.call_read(read)


def org_ids(repo: Ledger, table: Any, key: str) -> dict[str, str | None]:
    """Each row's org_id by key."""
    return {k: r["org_id"] for k, r in rows(repo, table, key).items()}


def journal(repo: Ledger, entity: str) -> list[dict[str, Any]]:
    """The journal entries of an entity, oldest first."""
    entries = rows(repo, JOURNAL, "id")
    return [entries[k] for k in sorted(entries) if entries[k]["entity"] == entity]


def mark_written(repo: Ledger, link_id: str, *booking_ids: str) -> None:
    """Give a link its Mogli Event and bookings their Events (what a push would record)."""

    def write(connection: Connection) -> None:
        links = update(LINKS).where(LINKS.c.link_id == link_id)
        connection.execute(links.values(mogli_event_id="a00000000000001AAA", state="synced"))
        for key in booking_ids:
            activity = update(ACTIVITIES).where(ACTIVITIES.c.booking_id == key)
            connection.execute(activity.values(activity_id="00U000000000001AAA", state="synced"))

    repo.call(write)


async def test_organization_and_connection_make_an_active_org(repo: Ledger) -> None:
    """An organization and its connection become one active `orgs` row, journaled as connected in that org."""
    summary = await repo.apply_source_batch(batch(txn(org(), conn())))
    row = rows(repo, ORGS, "org_id")[ORG_A]
    assert (row["name"], row["login_url"], row["username"], row["connection"]) == (
        "Acme",
        LOGIN,
        "integration@a.example",
        "connected",
    )
    assert (row["state"], row["reason"], row["state_since"]) == ("active", None, NOW)
    assert summary.orgs_changed and not summary.pending_work and summary.orgs_with_work == frozenset()
    entries = journal(repo, "org")
    assert {e["org_id"] for e in entries} == {ORG_A} and {e["entity_key"] for e in entries} == {ORG_A}
    assert [e["action"] for e in entries] == ["org.connected", "source.insert", "source.insert"]


async def test_organization_without_connection_is_disconnected(repo: Ledger) -> None:
    """An organization with no connection row is an org the bridge cannot reach: disconnected, with why."""
    await repo.apply_source_batch(batch(txn(org())))
    row = rows(repo, ORGS, "org_id")[ORG_A]
    assert (row["state"], row["reason"], row["connection"]) == (
        "disconnected",
        "no Salesforce connection in the scheduler",
        None,
    )


async def test_disconnect_and_reconnect_move_state_and_state_since(repo: Ledger) -> None:
    """'disconnected' makes the org disconnected with a reason; 'connected' makes it active again."""
    await repo.apply_source_batch(batch(txn(org(), conn())))
    await repo.apply_source_batch(batch(txn(conn(status="disconnected", op=ChangeOp.UPDATE)), now=LATER))
    row = rows(repo, ORGS, "org_id")[ORG_A]
    assert (row["state"], row["reason"], row["state_since"]) == (
        "disconnected",
        "disconnected in the scheduler",
        LATER,
    )
    again = LATER + timedelta(minutes=1)
    summary = await repo.apply_source_batch(batch(txn(conn(op=ChangeOp.UPDATE)), now=again))
    row = rows(repo, ORGS, "org_id")[ORG_A]
    assert (row["state"], row["reason"], row["state_since"]) == ("active", None, again)
    assert summary.orgs_changed
    actions = [e["action"] for e in journal(repo, "org") if e["action"].startswith("org.")]
    assert actions == ["org.connected", "org.disconnected", "org.connected"]


async def test_a_paused_org_stays_paused_when_its_connection_is_updated(repo: Ledger) -> None:
    """A pause is the runtime's to lift: a connected update keeps it paused, with its reason and since."""
    await repo.apply_source_batch(batch(txn(org(), conn())))
    repo.call(
        lambda c: c.execute(update(ORGS).values(state="paused", reason="token refused", state_since=NOW))
    )
    await repo.apply_source_batch(batch(txn(conn(op=ChangeOp.UPDATE)), now=LATER))
    row = rows(repo, ORGS, "org_id")[ORG_A]
    assert (row["state"], row["reason"], row["state_since"]) == ("paused", "token refused", NOW)


async def test_deleted_or_unreadable_connection_disconnects(repo: Ledger) -> None:
    """A deleted connection and an unknown status both disconnect the org; the problem is journaled."""
    await repo.apply_source_batch(batch(txn(org(), conn(), org(ORG_B, "Beta"), conn(ORG_B))))
    unreadable = ConnectionRow(
        id=ORG_B, login_url=LOGIN, username="x", problems=("status: 'half' is not ..",)
    )
    await repo.apply_source_batch(
        batch(
            txn(
                SourceChange(SourceTable.CONNECTIONS, ChangeOp.DELETE, ConnectionRow(id=ORG_A)),
                SourceChange(SourceTable.CONNECTIONS, ChangeOp.UPDATE, unreadable),
            )
        )
    )
    orgs = rows(repo, ORGS, "org_id")
    assert (orgs[ORG_A]["state"], orgs[ORG_A]["reason"], orgs[ORG_A]["connection"]) == (
        "disconnected",
        "the Salesforce connection was deleted in the scheduler",
        None,
    )
    assert (orgs[ORG_B]["state"], orgs[ORG_B]["connection"]) == ("disconnected", "unknown")
    assert (
        orgs[ORG_B]["reason"]
        == "the connection's status in the scheduler is neither connected nor disconnected"
    )
    (entry,) = [e for e in journal(repo, "org") if e["action"] == "org.disconnected" and e["org_id"] == ORG_B]
    assert entry["detail"]["problems"] == ["status: 'half' is not .."]


async def test_truncating_connections_disconnects_every_org(repo: Ledger) -> None:
    """A TRUNCATE of salesforce_connections disconnects every connected org, never the default one."""
    await repo.apply_source_batch(batch(txn(org(), conn(), org(ORG_B, "Beta"), conn(ORG_B))))
    await repo.apply_source_batch(batch(txn(truncate(SourceTable.CONNECTIONS))))
    orgs = rows(repo, ORGS, "org_id")
    assert {orgs[o]["state"] for o in (ORG_A, ORG_B)} == {"disconnected"}
    assert orgs["default"]["state"] == "active"


async def test_changed_login_url_or_username_is_journaled_by_field_name(repo: Ledger) -> None:
    """A changed integration user or login URL is journaled naming the field, never the username's value."""
    await repo.apply_source_batch(batch(txn(org(), conn())))
    renamed = conn(op=ChangeOp.UPDATE, username="someone.else@a.example")
    summary = await repo.apply_source_batch(batch(txn(renamed)))
    assert rows(repo, ORGS, "org_id")[ORG_A]["username"] == "someone.else@a.example"
    (entry,) = [e for e in journal(repo, "org") if e["action"] == "org.changed"]
    assert entry["detail"]["fields"] == ["username"] and entry["org_id"] == ORG_A
    assert "someone.else" not in str([e["detail"] for e in journal(repo, "org")])
    assert summary.orgs_changed
    unchanged = conn(op=ChangeOp.UPDATE, username=None, unchanged=frozenset({"username"}))
    summary = await repo.apply_source_batch(batch(txn(unchanged)))
    assert rows(repo, ORGS, "org_id")[ORG_A]["username"] == "someone.else@a.example"
    assert not summary.orgs_changed


async def test_links_and_activities_take_their_owners_org(repo: Ledger) -> None:
    """A user's organization is its org_id; its links and their bookings take it; journal rows carry it."""
    summary = await repo.apply_source_batch(
        batch(
            txn(org(), conn(), user("u1", organization_id=ORG_A), link("l1", "u1"), booking("b1")),
            txn(user("u2"), link("l2", "u2"), booking("b2", link_id="l2")),
        )
    )
    assert org_ids(repo, USERS, "user_id") == {"u1": ORG_A, "u2": None}
    assert org_ids(repo, LINKS, "link_id") == {"l1": ORG_A, "l2": None}
    assert org_ids(repo, ACTIVITIES, "booking_id") == {"b1": ORG_A, "b2": None}
    assert summary.orgs_with_work == frozenset({ORG_A, None})
    assert {(e["entity_key"], e["org_id"]) for e in journal(repo, "activity")} == {
        ("b1", ORG_A),
        ("b2", None),
    }
    assert {(e["entity_key"], e["org_id"]) for e in journal(repo, "link")} == {("l1", ORG_A), ("l2", None)}
    activity = await repo.get_activity("b1")
    assert activity is not None and activity.version == 1


async def test_a_booking_before_its_link_gets_the_links_org_when_it_arrives(repo: Ledger) -> None:
    """A booking that arrives first has no org; its link's arrival gives it the link's org."""
    await repo.apply_source_batch(batch(txn(user("u1", organization_id=ORG_A), booking("b1"))))
    assert org_ids(repo, ACTIVITIES, "booking_id") == {"b1": None}
    summary = await repo.apply_source_batch(batch(txn(link("l1", "u1"))))
    assert org_ids(repo, ACTIVITIES, "booking_id") == {"b1": ORG_A}
    assert org_ids(repo, LINKS, "link_id") == {"l1": ORG_A}
    assert summary.orgs_with_work == frozenset({ORG_A})


async def test_a_user_who_moves_takes_unwritten_links_and_activities(repo: Ledger) -> None:
    """A user moved to another org takes its unwritten links and their unwritten activities (queued again)."""
    await repo.apply_source_batch(
        batch(txn(user("u1", organization_id=ORG_A), link("l1", "u1"), booking("b1")))
    )
    summary = await repo.apply_source_batch(
        batch(txn(change(user("u1", organization_id=ORG_B), ChangeOp.UPDATE)))
    )
    assert org_ids(repo, USERS, "user_id") == {"u1": ORG_B}
    assert org_ids(repo, LINKS, "link_id") == {"l1": ORG_B}
    assert org_ids(repo, ACTIVITIES, "booking_id") == {"b1": ORG_B}
    assert summary.orgs_with_work == frozenset({ORG_B})
    activity = await repo.get_activity("b1")
    assert activity is not None and (activity.state, activity.version) == ("pending", 2)


async def test_a_written_link_keeps_its_org_when_its_owner_moves(repo: Ledger) -> None:
    """A link whose Mogli Event is written, and its written activities, never move; new bookings follow it."""
    await repo.apply_source_batch(
        batch(txn(user("u1", organization_id=ORG_A), link("l1", "u1"), booking("b1")))
    )
    mark_written(repo, "l1", "b1")
    await repo.apply_source_batch(batch(txn(change(user("u1", organization_id=ORG_B), ChangeOp.UPDATE))))
    await repo.apply_source_batch(batch(txn(booking("b2"))))
    assert org_ids(repo, USERS, "user_id") == {"u1": ORG_B}
    assert org_ids(repo, LINKS, "link_id") == {"l1": ORG_A}
    assert org_ids(repo, ACTIVITIES, "booking_id") == {"b1": ORG_A, "b2": ORG_A}


async def test_a_new_owner_in_another_org_moves_an_unwritten_link(repo: Ledger) -> None:
    """Changing an unwritten link's owner moves it, and its bookings, to the new owner's org."""
    await repo.apply_source_batch(
        batch(
            txn(
                user("u1", organization_id=ORG_A),
                user("u2", organization_id=ORG_B),
                link("l1", "u1"),
                booking("b1"),
            )
        )
    )
    await repo.apply_source_batch(batch(txn(change(link("l1", "u2"), ChangeOp.UPDATE))))
    assert org_ids(repo, LINKS, "link_id") == {"l1": ORG_B}
    assert org_ids(repo, ACTIVITIES, "booking_id") == {"b1": ORG_B}


async def test_unchanged_organization_keeps_the_users_org(repo: Ledger) -> None:
    """A user update whose organization_id is marked unchanged keeps the org the ledger knew."""
    await repo.apply_source_batch(batch(txn(user("u1", organization_id=ORG_A))))
    kept = user("u1", "005000000000009AAA", unchanged=frozenset({"organization_id"}))
    await repo.apply_source_batch(batch(txn(change(kept, ChangeOp.UPDATE))))
    assert org_ids(repo, USERS, "user_id") == {"u1": ORG_A}


async def test_cross_org_failures_are_retried_when_the_user_changes(repo: Ledger) -> None:
    """A booking failed CROSS_ORG_USER goes back to pending when its assigned user's row changes."""
    await repo.apply_source_batch(
        batch(
            txn(
                user("u1", organization_id=ORG_A),
                user("u2", organization_id=ORG_B),
                link("l1", "u1", link_type="round_robin"),
                booking("b1", assigned_user_id="u2"),
            )
        )
    )

    def fail(connection: Connection) -> None:
        failed = update(ACTIVITIES).where(ACTIVITIES.c.booking_id == "b1")
        connection.execute(failed.values(state="failed", error_code="CROSS_ORG_USER"))

    repo.call(fail)
    summary = await repo.apply_source_batch(
        batch(txn(change(user("u2", organization_id=ORG_A), ChangeOp.UPDATE)))
    )
    activity = await repo.get_activity("b1")
    assert activity is not None and activity.state == "pending"
    assert summary.orgs_with_work == frozenset({ORG_A})


async def test_tenancy_off_leaves_every_org_id_null(repo: Ledger) -> None:
    """Without organizations every org_id stays NULL and the `orgs` table holds only the default org."""
    summary = await repo.apply_source_batch(batch(txn(user("u1"), link("l1", "u1"), booking("b1"))))
    assert set(org_ids(repo, USERS, "user_id").values()) == {None}
    assert set(org_ids(repo, LINKS, "link_id").values()) == {None}
    assert set(org_ids(repo, ACTIVITIES, "booking_id").values()) == {None}
    assert {e["org_id"] for e in rows(repo, JOURNAL, "id").values()} == {None}
    assert list(rows(repo, ORGS, "org_id")) == ["default"]
    assert summary.orgs_with_work == frozenset({None}) and not summary.orgs_changed


async def test_deleting_an_organization_disconnects_it(repo: Ledger) -> None:
    """An organization deleted in the scheduler is disconnected, saying so."""
    await repo.apply_source_batch(batch(txn(org(), conn())))
    await repo.apply_source_batch(batch(txn(org(op=ChangeOp.DELETE))))
    row = rows(repo, ORGS, "org_id")[ORG_A]
    assert (row["state"], row["reason"]) == ("disconnected", "the organization was deleted in the scheduler")


async def test_a_replayed_snapshot_of_orgs_changes_nothing(repo: Ledger) -> None:
    """Organizations and connections read again by a new snapshot leave the `orgs` rows and states alone."""
    await repo.apply_source_batch(batch(txn(org(), conn(), user("u1", organization_id=ORG_A))))
    before = rows(repo, ORGS, "org_id")
    chunk = txn(org(), conn(), user("u1", organization_id=ORG_A), lsn=10, snapshot=True, last_chunk=True)
    summary = await repo.apply_source_batch(batch(chunk, now=LATER))
    assert rows(repo, ORGS, "org_id") == before
    assert not summary.orgs_changed and summary.orgs_with_work == frozenset()
    assert [e["action"] for e in journal(repo, "org") if e["action"].startswith("org.")] == ["org.connected"]
