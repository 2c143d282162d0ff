"""Source set-up against a real server: idempotent publication and slot, readiness report, slot metrics."""

from __future__ import annotations

from bridge.source.setup import check_source, drop_slot, ensure_publication, ensure_slot
from bridge.source.status import slot_status
from tests.integration.replication_support import SourceDb, wait_until


def published(db: SourceDb) -> set[str]:
    rows = db.run("SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = 'pub2'")
    return {r[0] for r in rows}


def test_publication_is_created_once_for_exactly_the_scheduler_tables(source_db: SourceDb) -> None:
    """ensure_publication creates it for the scheduler tables only, then changes nothing; lost ones return."""
    source_db.run("CREATE TABLE scheduler.audit (id int PRIMARY KEY)")
    expected = {
        "scheduler.organizations",
        "scheduler.salesforce_connections",
        "scheduler.users",
        "scheduler.scheduling_links",
        "scheduler.bookings",
    }
    assert ensure_publication(source_db.dsn, "scheduler", "pub2") is True
    assert published(source_db) == expected
    assert ensure_publication(source_db.dsn, "scheduler", "pub2") is False
    source_db.run("ALTER PUBLICATION pub2 DROP TABLE scheduler.bookings")
    assert ensure_publication(source_db.dsn, "scheduler", "pub2") is False
    assert published(source_db) == expected


def test_slot_is_created_once_and_dropped_once(source_db: SourceDb) -> None:
    """ensure_slot creates a durable pgoutput slot once; drop_slot removes it once."""
    slot = source_db.settings.slot
    assert ensure_slot(source_db.dsn, slot) is True
    assert ensure_slot(source_db.dsn, slot) is False
    rows = source_db.run("SELECT plugin, temporary FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    assert rows == [("pgoutput", False)]
    assert drop_slot(source_db.dsn, slot) is True
    assert drop_slot(source_db.dsn, slot) is False


def test_check_source_names_each_problem_then_reports_ready(source_db: SourceDb) -> None:
    """check_source lists the missing slot, publication and replica identity, and is ready once fixed."""
    s = source_db.settings
    source_db.run("ALTER TABLE scheduler.bookings REPLICA IDENTITY NOTHING")
    report = check_source(s.dsn, s.schema, s.slot, "nopub")
    assert report.ready is False and report.wal_level == "logical"
    assert report.server_version == source_db.cluster.version
    assert report.tables_present == (
        "organizations",
        "salesforce_connections",
        "users",
        "scheduling_links",
        "bookings",
    )
    assert any("publication nopub does not exist" in p for p in report.problems)
    assert any(f"replication slot {s.slot} does not exist" in p for p in report.problems)
    assert any("scheduler.bookings has no replica identity" in p for p in report.problems)
    source_db.run("ALTER TABLE scheduler.bookings REPLICA IDENTITY DEFAULT")
    ensure_slot(s.dsn, s.slot)
    report = check_source(s.dsn, s.schema, s.slot, s.publication)
    assert report.problems == () and report.ready is True
    assert report.publication_exists and report.slot_exists


def test_check_source_reports_missing_tables(source_db: SourceDb) -> None:
    """A schema without the scheduler tables is reported table by table."""
    report = check_source(source_db.dsn, "elsewhere", source_db.settings.slot, source_db.settings.publication)
    assert report.tables_present == ()
    assert "table elsewhere.users does not exist" in report.problems


async def test_slot_status_reports_lag(source_db: SourceDb) -> None:
    """slot_status shows an inactive slot holding back WAL written after it; None for no slot."""
    slot = source_db.settings.slot
    assert slot_status(source_db.dsn, slot) is None
    ensure_slot(source_db.dsn, slot)
    source_db.add_user()

    def lagging() -> bool:  # synchronous_commit=off: the WAL write position catches up a moment later
        status = slot_status(source_db.dsn, slot)
        return status is not None and (status.unconfirmed_bytes or 0) > 0

    await wait_until(lagging)
    status = slot_status(source_db.dsn, slot)
    assert status is not None and status.active is False and status.wal_status == "reserved"
    assert status.confirmed_flush_lsn is not None and status.restart_lsn is not None


def test_check_source_reports_missing_privileges(source_db: SourceDb) -> None:
    """A role without REPLICATION and without SELECT on the tables gets one readable problem for each."""
    role = f"plain_{source_db.settings.slot}"
    source_db.run(f"CREATE ROLE {role} LOGIN")
    try:
        dsn = source_db.dsn.replace("postgres@", f"{role}@", 1)
        s = source_db.settings
        report = check_source(dsn, s.schema, s.slot, s.publication)
    finally:
        source_db.run(f"DROP ROLE {role}")
    assert not report.ready
    assert any("lacks the REPLICATION attribute" in p for p in report.problems)
    assert "the connecting role cannot SELECT from scheduler.bookings" in report.problems
