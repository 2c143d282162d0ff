"""The Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from bridge.errors import ConfigurationError
from bridge.ledger import current_revision, head_revision, make_engine, normalise_url, upgrade_to_head
from bridge.ledger.tables import Base


def test_upgrade_empty_database_to_head(ledger_url: str) -> None:
    """An empty database has no revision; after the upgrade it is at head and holds every table."""
    assert current_revision(ledger_url) is None
    assert upgrade_to_head(ledger_url) == head_revision() is not None
    assert current_revision(ledger_url) == head_revision()
    engine = make_engine(ledger_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    expected = {"users", "links", "activities", "journal", "checkpoints", "reconciliation_runs", "drift"}
    assert expected <= tables


def test_upgrade_is_idempotent(ledger_url: str) -> None:
    """Running the upgrade twice leaves the ledger at head without error."""
    upgrade_to_head(ledger_url)
    assert upgrade_to_head(ledger_url) == head_revision()


def test_models_match_migration(ledger_url: str) -> None:
    """Autogenerate finds no difference between the migrated database and tables.py (like `alembic check`)."""
    upgrade_to_head(ledger_url)
    engine = make_engine(ledger_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_hot_query_indexes_exist(ledger_url: str) -> None:
    """The indexes the outbox and journal queries rely on are created by the migration."""
    upgrade_to_head(ledger_url)
    engine = make_engine(ledger_url)
    try:
        inspector = inspect(engine)
        columns = {
            (table, tuple(index["column_names"]))
            for table in ("activities", "links", "journal")
            for index in inspector.get_indexes(table)
        }
    finally:
        engine.dispose()
    assert ("activities", ("state", "next_attempt_at")) in columns
    assert ("activities", ("link_id",)) in columns
    assert ("links", ("state", "next_attempt_at")) in columns
    assert ("journal", ("entity", "entity_key")) in columns
    assert ("journal", ("at",)) in columns


def test_sqlite_engine_settings(tmp_path: Path) -> None:
    """A SQLite ledger gets its directory created and runs with WAL, a busy timeout and foreign keys."""
    url = f"sqlite:///{tmp_path}/a/b/ledger.sqlite3"
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert int(connection.execute(text("PRAGMA busy_timeout")).scalar() or 0) > 0
    finally:
        engine.dispose()
    assert (tmp_path / "a" / "b" / "ledger.sqlite3").exists()


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg2"),
        ("postgres://u@h/db", "postgresql+psycopg2"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2"),
        ("sqlite:///var/ledger.sqlite3", "sqlite"),
    ],
)
def test_normalise_url_picks_psycopg2(url: str, driver: str) -> None:
    """Bare PostgreSQL URLs get the psycopg2 driver; SQLite URLs are kept."""
    assert normalise_url(url).drivername == driver


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url"])
def test_unsupported_url_names_the_key(url: str) -> None:
    """Anything but SQLite or PostgreSQL is a configuration error naming ledger.url."""
    with pytest.raises(ConfigurationError) as caught:
        normalise_url(url)
    assert caught.value.key == "ledger.url"


async def test_sqlite_reader_does_not_block_the_writer(tmp_path: Path) -> None:
    """A read-only transaction on SQLite takes no write lock: a writer commits while it is open."""
    from bridge.ledger.engine import READ_ONLY
    from bridge.ledger.repository import Ledger

    url = f"sqlite:///{tmp_path}/ledger.sqlite3"
    upgrade_to_head(url)
    repo = Ledger.from_url(url)
    reader = make_engine(url)
    try:
        with reader.connect() as connection:
            connection.execution_options(**{READ_ONLY: True})
            connection.execute(text("SELECT count(*) FROM links")).scalar()
            await repo.write_checkpoint("source", "42")
        assert await repo.read_checkpoint("source") == "42"
    finally:
        reader.dispose()
        repo.dispose()


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_workers_migration_downgrades_and_upgrades_again(ledger_url: str) -> None:
    """0005 adds `workers` and `org_leases`; its downgrade drops them and leaves 0004's schema; the upgrade
    then applies again."""
    from alembic import command

    from bridge.ledger.migrate import alembic_config

    upgrade_to_head(ledger_url)
    assert {"workers", "org_leases"} <= _tables(ledger_url)
    engine = make_engine(ledger_url)
    try:
        with engine.begin() as connection:
            config = alembic_config(ledger_url)
            config.attributes["connection"] = connection
            command.downgrade(config, "0004")
    finally:
        engine.dispose()
    assert current_revision(ledger_url) == "0004"
    tables = _tables(ledger_url)
    assert not {"workers", "org_leases"} & tables
    assert "orgs" in tables
    assert upgrade_to_head(ledger_url) == head_revision() == "0005"
    assert {"workers", "org_leases"} <= _tables(ledger_url)
