"""The tenancy tables (CONTRACT §9) on a real server: decoding, snapshot, reads, set-up, old schemas."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bridge.commands import setup
from bridge.config import LedgerSettings, Settings, TenancySettings
from bridge.errors import ConfigurationError
from bridge.records.source import ChangeOp, ConnectionRow, OrganizationRow, SourceTable, UserRow
from bridge.source.reader_sql import SchedulerReader
from bridge.source.setup import check_source, ensure_publication, ensure_slot
from tests.integration.replication_support import SourceDb, skip_snapshot, streaming, take

LOGIN = "https://acme.my.salesforce.com"


def add_org(db: SourceDb, name: str = "Acme", *, connect: bool = True) -> str:
    """Insert an organization (and its connection); returns its id."""
    org = str(uuid.uuid4())
    db.run("INSERT INTO scheduler.organizations (id, name) VALUES (%s, %s)", (org, name))
    if connect:
        db.run(
            "INSERT INTO scheduler.salesforce_connections (organization_id, login_url, username)"
            " VALUES (%s, %s, 'integration@acme.example')",
            (org, LOGIN),
        )
    return org


def published(db: SourceDb, publication: str) -> set[str]:
    rows = db.run("SELECT tablename FROM pg_publication_tables WHERE pubname = %s", (publication,))
    return {r[0] for r in rows}


def drop_tenancy_schema(db: SourceDb) -> None:
    """Make the database look like one from before CONTRACT §9."""
    db.run("ALTER TABLE scheduler.users DROP COLUMN organization_id")
    db.run("DROP TABLE scheduler.salesforce_connections")
    db.run("DROP TABLE scheduler.organizations")


async def test_organizations_connections_and_user_orgs_stream_as_typed_rows(source_db: SourceDb) -> None:
    """Inserts, updates, a key-only delete and a truncate of the tenancy tables decode in order."""
    async with streaming(source_db) as (source, stream):
        await skip_snapshot(source, stream)
        org = add_org(source_db)
        user = str(uuid.uuid4())
        source_db.run(
            "INSERT INTO scheduler.users (id, email, full_name, organization_id)"
            " VALUES (%s, 'p@example.invalid', 'P', %s)",
            (user, org),
        )
        source_db.run("UPDATE scheduler.salesforce_connections SET status = 'disconnected'")
        source_db.run("UPDATE scheduler.salesforce_connections SET status = 'half'")
        source_db.run("DELETE FROM scheduler.salesforce_connections")
        source_db.run("UPDATE scheduler.users SET organization_id = NULL")
        source_db.run("TRUNCATE scheduler.salesforce_connections")
        txs = await take(stream, 8)
    rows = [(c.table, c.op, c.row) for tx in txs for c in tx.changes]
    connected = ConnectionRow(
        id=org, login_url=LOGIN, username="integration@acme.example", status="connected"
    )
    assert rows[:3] == [
        (SourceTable.ORGANIZATIONS, ChangeOp.INSERT, OrganizationRow(id=org, name="Acme")),
        (SourceTable.CONNECTIONS, ChangeOp.INSERT, connected),
        (SourceTable.USERS, ChangeOp.INSERT, UserRow(id=user, organization_id=org)),
    ]
    assert rows[3][2] == ConnectionRow(
        id=org, login_url=LOGIN, username="integration@acme.example", status="disconnected"
    )
    bad = rows[4][2]
    assert isinstance(bad, ConnectionRow) and bad.status is None
    assert bad.problems == ("salesforce_connections.status: 'half' is not one of connected, disconnected",)
    assert rows[5:] == [
        (SourceTable.CONNECTIONS, ChangeOp.DELETE, ConnectionRow(id=org)),
        (SourceTable.USERS, ChangeOp.UPDATE, UserRow(id=user)),
        (SourceTable.CONNECTIONS, ChangeOp.TRUNCATE, None),
    ]


async def test_snapshot_reads_organizations_and_connections_first(source_db: SourceDb) -> None:
    """The initial snapshot carries organizations, then connections, then users with their org."""
    org = add_org(source_db, "Globex")
    user = str(uuid.uuid4())
    source_db.run(
        "INSERT INTO scheduler.users (id, email, full_name, organization_id)"
        " VALUES (%s, 'q@x.invalid', 'Q', %s)",
        (user, org),
    )
    chunks = []
    async with streaming(source_db) as (source, stream):
        while not chunks or not chunks[-1].last_snapshot_chunk:
            chunks += await take(stream, 1)
        source.acknowledge(chunks[-1].end_lsn)
    assert all(chunk.snapshot for chunk in chunks)
    rows = [(c.table, c.row) for chunk in chunks for c in chunk.changes]
    assert rows == [
        (SourceTable.ORGANIZATIONS, OrganizationRow(id=org, name="Globex")),
        (
            SourceTable.CONNECTIONS,
            ConnectionRow(id=org, login_url=LOGIN, username="integration@acme.example", status="connected"),
        ),
        (SourceTable.USERS, UserRow(id=user, organization_id=org)),
    ]


async def test_scheduler_reader_reads_organizations_connections_and_user_orgs(source_db: SourceDb) -> None:
    """SchedulerReader (reconciliation's reads) returns organizations, connections and users' orgs by id."""
    org, other = add_org(source_db), add_org(source_db, "Initech", connect=False)
    user = source_db.add_user("005000000000001AAA")
    source_db.run("UPDATE scheduler.users SET organization_id = %s", (org,))
    reader = SchedulerReader(source_db.dsn, "scheduler")
    assert await reader.organization_ids() == sorted([org, other])
    assert await reader.organizations([org, "not-a-uuid"]) == {org: OrganizationRow(id=org, name="Acme")}
    connections = await reader.connections([org, other])
    assert list(connections) == [org] and connections[org].status == "connected"
    users = await reader.users([user])
    assert users[user].organization_id == org


async def test_old_schema_streams_users_without_org_and_reader_finds_no_orgs(source_db: SourceDb) -> None:
    """Without the tenancy tables and column, users decode as the default org's, with no problem."""
    drop_tenancy_schema(source_db)
    async with streaming(source_db) as (source, stream):
        await skip_snapshot(source, stream)
        user = source_db.add_user("005000000000001AAA")
        (tx,) = await take(stream, 1)
    assert [c.row for c in tx.changes] == [UserRow(id=user, salesforce_user_id="005000000000001AAA")]
    reader = SchedulerReader(source_db.dsn, "scheduler")
    assert await reader.organization_ids() == []
    assert await reader.organizations([user]) == {}
    assert (await reader.users([user]))[user].problems == ()
    assert await reader.scoped(None).user_ids() == [user]
    assert await reader.scoped(str(uuid.uuid4())).user_ids() == []


def test_setup_on_an_old_schema_without_tenancy_publishes_what_exists(source_db: SourceDb) -> None:
    """With tenancy off an older database gets a publication without the tenancy tables and is ready."""
    drop_tenancy_schema(source_db)
    s = source_db.settings
    with capture_logs() as logs:
        assert ensure_publication(s.dsn, "scheduler", "old_pub") is True
    (absent,) = [e for e in logs if e["event"] == "source.tenancy_schema_absent"]
    assert absent["missing"] == [
        "scheduler.organizations",
        "scheduler.salesforce_connections",
        "scheduler.users.organization_id",
    ]
    assert published(source_db, "old_pub") == {"users", "scheduling_links", "bookings"}
    ensure_slot(s.dsn, s.slot)
    report = check_source(s.dsn, "scheduler", s.slot, "old_pub")
    assert report.ready, report.problems
    assert report.tables_present == ("users", "scheduling_links", "bookings")


def test_setup_with_tenancy_names_what_the_old_schema_lacks(source_db: SourceDb) -> None:
    """With tenancy on, set-up refuses an older database, naming each missing table and the column."""
    drop_tenancy_schema(source_db)
    s = source_db.settings
    with pytest.raises(ConfigurationError) as raised:
        ensure_publication(s.dsn, "scheduler", "old_pub", tenancy=True)
    message = str(raised.value)
    for missing in (
        "scheduler.organizations",
        "scheduler.salesforce_connections",
        "scheduler.users.organization_id",
    ):
        assert missing in message
    assert raised.value.key == "tenancy.enabled"
    assert published(source_db, "old_pub") == set()
    report = check_source(s.dsn, "scheduler", s.slot, s.publication, tenancy=True)
    assert "table scheduler.organizations does not exist" in report.problems
    assert "column scheduler.users.organization_id does not exist (tenancy.enabled = true needs it)" in (
        report.problems
    )


def test_existing_publication_gains_the_tenancy_tables(source_db: SourceDb) -> None:
    """An installation whose publication predates §9 gets both tables added (ALTER PUBLICATION ... ADD)."""
    source_db.run(
        "CREATE PUBLICATION pre_pub FOR TABLE scheduler.users, scheduler.scheduling_links, scheduler.bookings"
    )
    s = source_db.settings
    ensure_slot(s.dsn, s.slot)
    report = check_source(s.dsn, "scheduler", s.slot, "pre_pub", tenancy=True)
    assert (
        "publication pre_pub lacks organizations, salesforce_connections (mogli-bridge setup adds them)"
        in (report.problems)
    )
    with capture_logs() as logs:
        assert ensure_publication(s.dsn, "scheduler", "pre_pub", tenancy=True) is False
    (extended,) = [e for e in logs if e["event"] == "source.publication_extended"]
    assert extended["log_level"] == "warning" and "--reset-source" in extended["hint"]
    assert published(source_db, "pre_pub") == {
        "organizations",
        "salesforce_connections",
        "users",
        "scheduling_links",
        "bookings",
    }
    assert check_source(s.dsn, "scheduler", s.slot, "pre_pub", tenancy=True).ready


async def test_scoped_scheduler_reader_sees_one_orgs_ids(source_db: SourceDb) -> None:
    """A scoped reader's scope queries return that org's users, links and bookings (the default org: NULL)."""
    org = add_org(source_db)
    ours, theirs = source_db.add_user(), source_db.add_user()
    source_db.run("UPDATE scheduler.users SET organization_id = %s WHERE id = %s", (org, ours))
    our_link, their_link = source_db.add_link(ours), source_db.add_link(theirs)
    our_booking, their_booking = str(uuid.uuid4()), str(uuid.uuid4())
    for booking, link in ((our_booking, our_link), (their_booking, their_link)):
        source_db.run(
            "INSERT INTO scheduler.bookings (id, link_id, start_at, end_at, status, invitee_name)"
            " VALUES (%s, %s, now(), now() + interval '30 minutes', 'scheduled', 'X')",
            (booking, link),
        )
    reader = SchedulerReader(source_db.dsn, "scheduler")
    scoped, default = reader.scoped(org), reader.scoped(None)
    assert await scoped.user_ids() == [ours] and await default.user_ids() == [theirs]
    assert await scoped.link_ids() == [our_link] and await default.link_ids() == [their_link]
    assert await scoped.booking_ids([], [], None, None) == [(our_booking, our_link, None)]
    assert await default.booking_ids([their_link, our_link], [], None, None) == [
        (their_booking, their_link, None)
    ]
    assert await scoped.organization_ids() == [org] and await default.organization_ids() == []
    assert sorted(await reader.user_ids()) == sorted([ours, theirs])
    assert len(await reader.booking_ids([], [], None, None)) == 2
    # rows by id are never narrowed: a re-mirror sees every row as it is
    assert set(await scoped.users([ours, theirs])) == {ours, theirs}


def test_setup_command_with_tenancy_refuses_an_old_schema_and_without_it_is_ready(
    source_db: SourceDb, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mogli-bridge setup` raises the configuration error with tenancy on; with it off the same database is
    ready (publication without the tenancy tables)."""
    drop_tenancy_schema(source_db)
    ledger = LedgerSettings(url=f"sqlite:///{tmp_path}/ledger.sqlite3")
    settings = Settings(source=source_db.settings, ledger=ledger, tenancy=TenancySettings(enabled=True))
    with pytest.raises(ConfigurationError, match=r"lacks scheduler\.organizations"):
        setup.setup(settings, check_salesforce=False)
    off = Settings(source=source_db.settings, ledger=ledger)
    assert setup.setup(off, check_salesforce=False) == 0, capsys.readouterr().out
    assert published(source_db, source_db.settings.publication) == {"users", "scheduling_links", "bookings"}
